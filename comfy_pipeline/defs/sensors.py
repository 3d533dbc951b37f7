"""Sensors: a prompt inbox folder that starts runs, and a log of failed runs."""

import hashlib
import json
import tempfile
import time
from pathlib import Path

import dagster as dg

from comfy_pipeline import settings
from comfy_pipeline.batch import inbox, ledger, outputs
from comfy_pipeline.comfyui.redaction import scrub
from comfy_pipeline.defs.circuit_breaker import breaker_state
from comfy_pipeline.defs.config import PromptConfig, VideoConfig
from comfy_pipeline.defs.jobs import image_to_video_job, video_generation_job
from comfy_pipeline.defs.resources import ComfyUIResource
from comfy_pipeline.media import MediaError, probe_image
from comfy_pipeline.storage import ObjectExists, ObjectMissing, Store, StoreError
from comfy_pipeline.workflows.prompts import PromptBytes, PromptError, check_specs, read_prompt_file
from comfy_pipeline.workflows.workflow import WorkflowError

FAILURES_LOG = "failures.jsonl"
FAILURES_FOLDER = "failures"  # on an object store, which cannot append: one object per failed run
MAX_STORE_ERRORS = 3  # objects the store failed to give in one tick before the rest waits for the next


def inbox_run_request(store: Store, dropped: inbox.Dropped) -> dg.RunRequest:
    """One run per prompt object. The run key is the content hash (plus the image's), so the same content dropped
    again does not run twice and an edited one does. Raises PromptError for a bad file (or image), so that a
    run that would fail on its values never starts; StoreError when the store cannot be read."""
    data = inbox.read_prompt(store, dropped)
    specs = check_specs(read_prompt_file(PromptBytes(dropped.name, data)))
    digest = hashlib.sha256(data)
    tags = {"comfy_pipeline/inbox_file": dropped.name}
    if dropped.image is None:
        return dg.RunRequest(
            run_key=f"inbox-{digest.hexdigest()}",
            job_name=image_to_video_job.name,
            run_config=dg.RunConfig(ops={"prompt": PromptConfig.from_specs(specs)}),
            tags=tags,
        )
    key = dropped.image.key
    inbox.check_image_size(dropped, store)
    # Probed where it is on disk; downloaded to a temporary folder from a remote store, gone after the probe.
    with tempfile.TemporaryDirectory(prefix="comfy-inbox-") as tmp:
        image = store.get_file(key, Path(tmp))
        try:
            probe_image(image)
        except MediaError as exc:
            raise PromptError(
                f"{dropped.name}: the image beside it, {key.rsplit('/', 1)[-1]}, cannot be used "
                f"({str(exc).replace(str(image), store.uri(key))}); replace it with a PNG, JPEG or WebP image, "
                "or remove it to generate the image from the prompt"
            ) from None
        inbox.hash_file(digest, image)
    local = store.path_of(key)  # the video step reads a local image in place, an s3:// one from the store
    return dg.RunRequest(
        run_key=f"inbox-{digest.hexdigest()}",
        job_name=video_generation_job.name,
        run_config=dg.RunConfig(
            ops={"ltx2_video": VideoConfig.animate(local.resolve() if local else store.uri(key), specs[0])}),
        tags=tags,
    )


@dg.sensor(
    jobs=[image_to_video_job, video_generation_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts a run for every new prompt file (.txt or .json; an image beside it makes it video-only) "
    "dropped into <output location>/inbox (a folder, or s3://bucket/prefix/inbox/).",
)
def prompt_inbox_sensor(context: dg.SensorEvaluationContext, comfy: ComfyUIResource):
    try:
        store = comfy.output_store
    except settings.SettingError as exc:
        return dg.SkipReason(f"The output location is not usable: {exc}")
    breaker = breaker_state(context.instance, store)
    if breaker.warning:
        context.log.warning(breaker.warning)
    if breaker.open:
        return dg.SkipReason(breaker.message)
    where = f"{store.uri(inbox.INBOX)}{'' if store.local else '/'}"
    settle = settings.inbox_settle_s(inbox.SETTLE_S)
    try:
        inbox.prepare(store)
        found = inbox.scan(store, inbox.load_cursor(context.cursor), settle=settle)
    except StoreError as exc:  # the cursor stays as it was: nothing was handled
        return dg.SkipReason(f"Cannot look into the inbox {where}: {exc}")
    requests, problems, unreadable = [], [], []
    for dropped in found.ready:
        name = dropped.name
        try:
            requests.append(inbox_run_request(store, dropped))
            inbox.mark_handled(found, dropped)
        except ObjectMissing:
            continue  # removed (or replaced) since the listing: the next tick sees what is there now
        except StoreError as exc:  # the store, not the file: left in place and tried again next tick
            unreadable.append(f"{name}: {exc}")
            if len(unreadable) >= MAX_STORE_ERRORS:
                break  # the store is likely down: the rest waits for the next tick
        except Exception as exc:  # any bad file, however bad, is set aside: it must never block the others
            reason = str(exc) if isinstance(exc, (PromptError, WorkflowError)) else f"{type(exc).__name__}: {exc}"
            reason = reason if reason.startswith(name) else f"{name}: {reason}"
            try:
                inbox.reject(store, dropped, reason)
                problems.append(f"{reason} (moved to {inbox.REJECTED}/)")
            except (OSError, StoreError) as move_error:
                inbox.mark_handled(found, dropped)  # cannot move it: remember it, so it is reported once
                why = move_error.strerror if isinstance(move_error, OSError) else str(move_error)
                problems.append(f"{reason} (could not move it aside: {why})")
    context.update_cursor(inbox.dump_cursor(found))
    for problem in problems:
        context.log.warning(f"skipped inbox file {problem}")
    for problem in unreadable:
        context.log.warning(f"could not read inbox file {problem}; tried again next tick")
    if not requests:
        reasons = problems + [f"could not read {p}; tried again next tick" for p in unreadable] + [
            f"{name}: still being written; taken once unchanged for {settle:g} s" for name in found.waiting]
        return dg.SkipReason("; ".join(reasons) if reasons else f"no new prompt files in {where}")
    return dg.SensorResult(run_requests=requests)


@dg.run_failure_sensor(
    # No monitored_jobs: every job of this code location, the UI's Materialize runs (__ASSET_JOB) included.
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Appends each failed run of this code location (job, run id, error, ComfyUI node) to "
    "<output folder>/failures.jsonl (on an object store: one object per failure under failures/), and cancels any "
    "prompt the run left on the ComfyUI server.",
)
def failure_log_sensor(context: dg.RunFailureSensorContext, comfy: ComfyUIResource):
    secrets = comfy.secrets
    run_id = context.dagster_run.run_id
    try:
        store = comfy.output_store
    except settings.SettingError as exc:  # a malformed output location: the run's own failure names it too
        context.log.warning(f"could not log failed run {run_id}: {scrub(str(exc), secrets)}")
        return
    _cancel_prompts_left_behind(context, comfy)
    steps = []
    for event in context.get_step_failure_events():
        data = event.step_failure_data
        user = data.user_failure_data
        metadata = {k: v.value for k, v in (user.metadata or {}).items()} if user else {}
        message = (user.description if user and user.description else None) or (
            data.error.message if data.error else "")
        steps.append({"step": event.step_key, "error": scrub(message.strip(), secrets),
                      "comfyui_node": metadata.get("comfyui_node")})
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "job": context.dagster_run.job_name,
        "run_id": run_id,
        "error": scrub(context.failure_event.message or "", secrets),
        "steps": steps,
        "comfyui_node": next((s["comfyui_node"] for s in steps if s["comfyui_node"]), None),
    }
    try:
        where = log_failure(store, entry)
    except StoreError as exc:
        context.log.warning(f"could not log failed run {run_id} in {store.location}: {scrub(str(exc), secrets)}")
        return
    if where:
        context.log.info(f"logged failed run {run_id} in {where}")


def log_failure(store: Store, entry: dict) -> str | None:
    """One failed run's entry: a line appended to failures.jsonl in a local folder, or an object of its own,
    `failures/<UTC time>_<run id>.json`, on an object store. Where it went (None: it was there already)."""
    line = json.dumps(entry, ensure_ascii=False)
    local = store.path_of(FAILURES_LOG)  # None on an object store
    if local is not None:
        outputs.append_line(local, line)
        return str(local)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    key = f"{FAILURES_FOLDER}/{stamp}_{outputs.slugify(entry['run_id'], 64)}.json"
    try:
        store.put_bytes(key, (line + "\n").encode("utf-8"))  # never replaces another entry
    except ObjectExists:
        return None  # this run, logged within the same second: a repeated evaluation of the same failure
    return store.uri(key)


def _cancel_prompts_left_behind(context: dg.RunFailureSensorContext, comfy: ComfyUIResource) -> None:
    """A run that died (its worker killed, marked failed by run monitoring) may have prompts still queued or
    running on the server: cancel them (batch.ledger). Only for a configured server: the embedded simulator
    died with the run."""
    run_id = context.dagster_run.run_id
    try:
        store = comfy.output_store
        if not ledger.has_record(store, run_id):
            return
    except (StoreError, settings.SettingError) as exc:  # the next batch against that server sweeps again
        context.log.warning(f"could not look for prompts run {run_id} left behind: {scrub(str(exc), comfy.secrets)}")
        return
    try:
        if comfy.configured_urls() in ([], ["simulator"]):
            return
    except settings.SettingError as exc:  # e.g. a corrupt session state file: the run's own failure names it
        context.log.warning(f"could not cancel the prompts run {run_id} left behind: {exc}")
        return
    try:
        for client in comfy.get_clients():
            try:
                found = ledger.cancel_orphans(store, client.url, client.cancel, lambda _: True, only_run=run_id)
            except Exception as exc:  # the next batch against that server sweeps again
                context.log.warning(f"could not cancel the prompts run {run_id} left on {client.url}: "
                                    f"{scrub(str(exc), comfy.secrets)}")
                continue
            if found:
                context.log.warning(f"cancelled {len(found)} prompt(s) that failed run {run_id} left on {client.url}")
    finally:
        comfy.close()
