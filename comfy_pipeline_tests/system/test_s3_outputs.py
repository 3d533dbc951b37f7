"""Outputs on an S3-compatible store, end to end (issue 22): README's commands run as a user runs them, with
COMFY_PIPELINE_OUTPUT_DIR=s3://bucket/prefix and the standard AWS variables pointing at a real S3 API server on
loopback (moto's server mode, the `s3_server` fixture). What the runs leave is read back over the S3 protocol:
images decoded from the bytes, videos probed with ffprobe, reports and manifests parsed; and nothing is left on the
local disk but temporary files that are gone afterwards."""

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from dagster._serdes import serialize_value
from PIL import Image

from comfy_pipeline.media import probe_video
from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import BIN, clean_env, dagster_env, files_in, stop_group, wait_until
from comfy_pipeline_tests.support.s3_server import ACCESS_KEY, SECRET_KEY, S3Server

SMALL = {"width": 256, "height": 256, "frames": 9, "fps": 8}
PREFIX = "team/comfy"
ASSETS = ("generated_image", "ltx2_video", "validation_report")


# -- helpers ----------------------------------------------------------------------------------------------------


@dataclass
class Place:
    """Where a test's runs write: the bucket and prefix, and the Dagster instance they share."""

    s3: S3Server
    bucket: str
    home: Path
    tmp: Path  # the runs' TMPDIR: their temporary files, which must all be gone when they end

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{PREFIX}"

    def env(self, tmp: Path | None = None, **extra: str) -> dict[str, str]:
        """A run's environment: the output location, the AWS variables, the instance, and TMPDIR (`tmp` or the
        place's own)."""
        settings = {"COMFY_PIPELINE_OUTPUT_DIR": self.location, "TMPDIR": str(tmp or self.tmp), **self.s3.env()}
        return dagster_env(self.home, **{**settings, **extra})

    def keys(self, under: str = "") -> list[str]:
        return self.s3.keys(self.bucket, f"{PREFIX}/{under}")

    def key(self, uri: str) -> str:
        """The bucket key of an s3:// URI of this place (fails the test if the URI is anywhere else)."""
        assert isinstance(uri, str) and uri.startswith(f"{self.location}/"), f"{uri!r} is not under {self.location}"
        return uri[len(f"s3://{self.bucket}/"):]

    def read(self, uri: str) -> bytes:
        return self.s3.read(self.bucket, self.key(uri))

    def json(self, uri: str) -> dict:
        return json.loads(self.read(uri))


def new_place(s3: S3Server, tmp_path: Path) -> Place:
    home = tmp_path / "home"
    home.mkdir()
    with dg.DagsterInstance.from_config(str(home)):
        pass  # the instance's storage exists before several processes open it (they race creating tables)
    (tmp_path / "tmp").mkdir()
    return Place(s3, s3.new_bucket(), home, tmp_path / "tmp")


def dagster(*args: str, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """A `dagster` command as a user types it, in `cwd` (created empty if missing)."""
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(BIN / "dagster"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def start(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([str(BIN / "dagster"), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def execute_args(job: str, tmp_path: Path, name: str, prompts: list[dict] | None = None,
                 comfy: dict | None = None) -> list[str]:
    """`job execute -m comfy_pipeline -j JOB -c run.yaml`: README's main command, with these prompts and resource
    settings (the server and the output location come from the environment)."""
    args = ["job", "execute", "-m", "comfy_pipeline", "-j", job, "--tags", json.dumps({"case": name})]
    config = {}
    if prompts is not None:
        config["ops"] = {"prompt": {"config": {"prompts": prompts}}}
    if comfy:
        config["resources"] = {"comfy": {"config": comfy}}
    if config:
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        args += ["-c", str(path)]
    return args


def said(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{(proc.stdout or '')[-5000:]}\n{(proc.stderr or '')[-5000:]}"


def open_instance(home: Path) -> dg.DagsterInstance:
    return dg.DagsterInstance.from_config(str(home))


def run_of(instance: dg.DagsterInstance, case: str) -> dg.DagsterRun:
    (run,) = instance.get_runs(filters=dg.RunsFilter(tags={"case": case}))
    return run


def materialization(instance: dg.DagsterInstance, run_id: str, asset: str) -> dict | None:
    """The metadata of `asset`'s materialization in run `run_id` (values unwrapped), None if it has none."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        found = record.event_log_entry.asset_materialization
        if found.asset_key == dg.AssetKey(asset):
            return {k: v.value for k, v in found.metadata.items()}
    return None


def latest(instance: dg.DagsterInstance, asset: str) -> tuple[str, dict]:
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    assert event is not None, f"{asset} was never materialized"
    return event.run_id, {k: v.value for k, v in event.asset_materialization.metadata.items()}


def path_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    """Every path or URL the run's materializations and check evaluations recorded, by `asset.label`."""
    found = {}
    kinds = (dg.DagsterEventType.ASSET_MATERIALIZATION, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    for kind in kinds:
        for record in instance.get_records_for_run(run_id, of_type=kind).records:
            event = record.event_log_entry.dagster_event
            data = event.event_specific_data
            owner = data.materialization if kind == kinds[0] else data
            name = owner.asset_key.to_user_string() + (f"[{data.check_name}]" if kind == kinds[1] else "")
            for label, value in owner.metadata.items():
                if isinstance(value, (dg.PathMetadataValue, dg.UrlMetadataValue)):
                    found[f"{name}.{label}"] = value.value
    return found


def items_of(place: Place, meta: dict) -> list[dict]:
    """The outputs a materialization listed (its metadata points to the listing, on the store)."""
    return place.json(meta["items_json"])["items"] if meta else []


def step_outcomes(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    outcomes = {}
    for kind, word in ((dg.DagsterEventType.STEP_SUCCESS, "success"), (dg.DagsterEventType.STEP_FAILURE, "failure")):
        for record in instance.get_records_for_run(run_id, of_type=kind).records:
            outcomes[record.event_log_entry.step_key] = word
    return outcomes


def temporary_left(place: Place, tmp: Path | None = None) -> list[Path]:
    """What the runs left in their temporary folder (`tmp` or the place's own): their staging folders (removed
    when each step ends), s3:// inputs fetched, anything else. The runs are over: it must all be gone."""
    return sorted((tmp or place.tmp).rglob("*"))


def assert_whole(place: Place, item: dict, tmp_path: Path) -> None:
    """The object of an output item is the file the run checked: same size and SHA-256, and it decodes."""
    data = place.read(item["path"])
    if item.get("size_bytes"):
        assert len(data) == item["size_bytes"], item["path"]
    if item.get("sha256"):
        assert hashlib.sha256(data).hexdigest() == item["sha256"], item["path"]
    if item["path"].endswith(".png"):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            assert image.size == (item["spec"]["width"], item["spec"]["height"])
    elif item["path"].endswith(".mp4"):
        local = tmp_path / "downloaded" / hashlib.sha256(item["path"].encode()).hexdigest()[:16] / "video.mp4"
        local.parent.mkdir(parents=True)
        local.write_bytes(data)
        assert probe_video(local).frame_count > 1


def nothing_local(cwd: Path) -> list[Path]:
    return files_in(cwd) + [p for p in cwd.rglob("*") if p.is_dir()]


OURS = {"comfy_pipeline_manifests", "inbox", ".inflight", "failures", "failures.jsonl", "comfy_outputs"}


def ours_beside_instance(place: Place) -> list[Path]:
    """What of the pipeline's own state (manifests, outputs, inbox, prompt ledger, failure log) ended up in
    DAGSTER_HOME instead of on the store. The instance's own files (its databases, compute logs) are Dagster's."""
    return [p for p in place.home.rglob("*") if p.name in OURS or p.suffix in (".png", ".mp4")]


# -- the main command -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def main_run(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory):
    """README's main command, nothing else set but the output location, the AWS variables and a fresh
    DAGSTER_HOME (so that the run can be read back), in an empty folder."""
    tmp_path = tmp_path_factory.mktemp("s3-main")
    place = new_place(s3_server, tmp_path)
    cwd = tmp_path / "cwd"
    proc = dagster("job", "execute", "-m", "comfy_pipeline", "-j", "image_to_video_job", cwd=cwd, env=place.env())
    return place, cwd, proc


@pytest.mark.slow  # slow tier: the whole main job in a subprocess
@pytest.mark.timeout(1200)  # its waits are on the subprocess; a busy machine must not fail it
def test_main_command_writes_runs_reports_and_manifests_to_the_bucket_and_nothing_locally(main_run, tmp_path):
    place, cwd, proc = main_run
    assert proc.returncode == 0, said(proc)
    with open_instance(place.home) as instance:
        (run,) = instance.get_runs()
        run_id = run.run_id
        metas = {asset: materialization(instance, run_id, asset) for asset in ASSETS}
        paths = path_metadata(instance, run_id)
        latest_runs = {asset: latest(instance, asset)[0] for asset in ASSETS}
    assert latest_runs == dict.fromkeys(ASSETS, run_id)

    # The run folder: runs/<UTC time>_<run id>/{images,videos,reports}/
    keys = place.keys("runs/")
    folders = {k.split("/")[3] for k in keys}
    (folder,) = folders
    assert folder.endswith(f"_{run_id}") and len(folder.split("_")[0]) == len("20260101T000000Z"), folder
    run_key = f"{PREFIX}/runs/{folder}"
    kinds = {k[len(run_key) + 1:].split("/")[0] for k in keys}
    assert kinds == {"images", "videos", "reports"}, keys
    pngs = [k for k in keys if k.startswith(f"{run_key}/images/") and k.endswith(".png")]
    mp4s = [k for k in keys if k.startswith(f"{run_key}/videos/") and k.endswith(".mp4")]
    assert len(pngs) == 1 and len(mp4s) == 1, keys
    with Image.open(io.BytesIO(place.s3.read(place.bucket, pngs[0]))) as image:
        assert image.size == (1024, 784)
    video = tmp_path / "video.mp4"
    video.write_bytes(place.s3.read(place.bucket, mp4s[0]))
    assert probe_video(video).frame_count > 1

    # The report is on the store and names the outputs by their s3:// URIs.
    report_key = f"{run_key}/reports/validation_report.json"
    assert report_key in keys and f"{run_key}/reports/validation_report.csv" in keys
    report = json.loads(place.s3.read(place.bucket, report_key))
    assert sorted(row["path"] for row in report["rows"]) == sorted(f"s3://{place.bucket}/{k}" for k in pngs + mp4s)
    assert all(row["verdict"] == "passed" for row in report["rows"])

    # The manifests (the IO manager's) are on the store, one per asset and run.
    manifests = place.keys("manifests/")
    for asset in ASSETS:
        assert f"{PREFIX}/manifests/{asset}/{run_id}.json" in manifests, manifests
        assert metas[asset]["manifest"] == f"{place.location}/manifests/{asset}/{run_id}.json"
    # Every path the instance recorded is an s3:// URI of this place, and each one's object exists.
    assert {"generated_image.items_json", "ltx2_video.items_json", "validation_report.report_json"} <= set(paths)
    for label, uri in paths.items():
        key = place.key(uri)
        assert key in keys or key in manifests or any(k.startswith(key + "/") for k in keys), (label, uri)
    assert [i["path"] for i in items_of(place, metas["generated_image"])] == [f"s3://{place.bucket}/{pngs[0]}"]
    (clip,) = items_of(place, metas["ltx2_video"])
    assert clip["path"] == f"s3://{place.bucket}/{mp4s[0]}" and clip["input_image"] == f"s3://{place.bucket}/{pngs[0]}"
    # Previews still show in the UI: small pictures inside the metadata, not links to the bucket.
    for asset in ("generated_image", "ltx2_video"):
        previews = [v for k, v in metas[asset].items() if k.startswith("previews")]
        assert previews and "![preview](data:image/" in previews[0], (asset, previews)
    # The log says where the outputs are.
    assert place.location in proc.stdout + proc.stderr

    # Nothing on the local disk: not in the working folder, no manifests beside the instance, no staging left.
    assert nothing_local(cwd) == []
    assert ours_beside_instance(place) == []
    assert temporary_left(place) == []


# -- failure isolation ------------------------------------------------------------------------------------------


@pytest.mark.slow  # slow tier: the whole main job in a subprocess
@pytest.mark.timeout(1200)
def test_a_broken_output_is_kept_on_the_store_named_in_the_report_and_fails_only_the_report(s3_server, tmp_path):
    place = new_place(s3_server, tmp_path)
    prompts = [{"text": "a night that went black", "seed": 1, **SMALL}, {"text": "a sunny meadow", "seed": 2, **SMALL}]
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as sim:
        sim.set_fault("black-output", count=1)  # the first prompt's image comes back black, the second is good
        proc = dagster(*execute_args("image_to_video_job", tmp_path, "black", prompts), cwd=tmp_path / "cwd",
                       env=place.env(COMFYUI_URL=sim.url))
    assert proc.returncode == 1, said(proc)
    with open_instance(place.home) as instance:
        run_id = run_of(instance, "black").run_id
        outcomes = step_outcomes(instance, run_id)
        images = items_of(place, materialization(instance, run_id, "generated_image"))
        videos = items_of(place, materialization(instance, run_id, "ltx2_video"))
        report_meta = materialization(instance, run_id, "validation_report")
    # As on a local disk: the good prompt goes on to its video, the run fails at its end (the report) naming it.
    assert outcomes["generated_image"] == "success" and outcomes["ltx2_video"] == "success", outcomes
    assert outcomes["validation_report"] == "failure", outcomes
    assert [k for k, v in outcomes.items() if v == "failure"] == ["validation_report"]
    black, good = images
    assert black["prompt"] == "a night that went black" and not all(c["passed"] for c in black["checks"])
    assert all(c["passed"] for c in good["checks"])
    for item in (black, good):  # both on the store, whole: the broken one kept for inspection
        assert_whole(place, item, tmp_path)
    (video,) = videos
    assert video["input_image"] == good["path"]
    assert_whole(place, video, tmp_path)
    report = place.json(report_meta["report_json"])
    (failed,) = [row for row in report["rows"] if row["verdict"] != "passed"]
    assert failed["prompt"] == "a night that went black" and failed["path"] == black["path"]
    assert "image is black" in failed["reason"]
    assert "image is black" in proc.stdout + proc.stderr
    assert nothing_local(tmp_path / "cwd") == [] and temporary_left(place) == []
    assert ours_beside_instance(place) == []


# -- concurrent runs --------------------------------------------------------------------------------------------


@pytest.mark.slow  # slow tier: two jobs in subprocesses at once
@pytest.mark.timeout(1500)
def test_two_runs_at_once_into_one_prefix_keep_their_own_folders_and_whole_objects(s3_server, tmp_path):
    place = new_place(s3_server, tmp_path)
    cases = {name: [{"text": f"{name} prompt {j}: a {animal}", "seed": 10 * i + j, **SMALL} for j in range(2)]
             for i, (name, animal) in enumerate([("first", "fox"), ("second", "owl")])}
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.2, video_seconds=0.2) as sim:
        procs = {name: start(*execute_args("image_to_video_job", tmp_path, name, prompts), cwd=tmp_path / name,
                             env=place.env(COMFYUI_URL=sim.url))
                 for name, prompts in cases.items()}
        logs = {name: proc.communicate(timeout=600)[0] for name, proc in procs.items()}
    for name, proc in procs.items():
        assert proc.returncode == 0, logs[name][-5000:]
    keys = place.keys()
    listed = set()
    folders = {}
    with open_instance(place.home) as instance:
        for name, prompts in cases.items():
            run_id = run_of(instance, name).run_id
            metas = {asset: materialization(instance, run_id, asset) for asset in ASSETS}
            (folder,) = {k.split("/")[3] for k in keys if k.startswith(f"{PREFIX}/runs/") and run_id in k}
            folders[name] = folder
            own = f"{place.location}/runs/{folder}/"
            images, videos = items_of(place, metas["generated_image"]), items_of(place, metas["ltx2_video"])
            assert [i["prompt"] for i in images] == [p["text"] for p in prompts]
            assert [v["input_image"] for v in videos] == [i["path"] for i in images]
            for item in images + videos:
                assert item["path"].startswith(own), item["path"]
                assert_whole(place, item, tmp_path)
                listed.add(place.key(item["path"]))
            report = place.json(metas["validation_report"]["report_json"])
            assert {r["prompt"] for r in report["rows"]} == {p["text"] for p in prompts}
            assert {r["path"] for r in report["rows"]} == {i["path"] for i in images + videos}
            for asset in ASSETS:
                listed.add(place.key(metas[asset]["manifest"]))
        assert len(instance.get_runs()) == 2
    assert folders["first"] != folders["second"]
    # Nothing was overwritten: each run's media objects are its own (hashes above) and no other media appeared.
    media = {k for k in keys if k.endswith((".png", ".mp4"))}
    assert media == {k for k in listed if k.endswith((".png", ".mp4"))}
    assert listed <= set(keys)
    for key in keys:  # every JSON object parses whole
        if key.endswith(".json"):
            json.loads(place.s3.read(place.bucket, key))
    for name in cases:
        assert nothing_local(tmp_path / name) == []
    assert temporary_left(place) == [] and ours_beside_instance(place) == []


# -- re-execution and single-asset materialization with no shared disk -----------------------------------------

REEXECUTE = """
import json, sys
import dagster as dg

from comfy_pipeline.definitions import defs


def image_to_video_job():
    return defs.resolve_job_def("image_to_video_job")


if __name__ == "__main__":
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME: the instance the first run used
        options = dg.ReexecutionOptions.from_failure(sys.argv[1], instance)
        result = dg.execute_job(dg.reconstructable(image_to_video_job), instance=instance,
                                reexecution_options=options, raise_on_error=False)
        print(json.dumps({"run_id": result.run_id, "success": result.success}))
"""


def _stop_when_a_video_runs(sim: Simulator) -> None:
    def video_running() -> bool:
        running = requests.get(f"{sim.url}/queue", timeout=5).json()["queue_running"]
        return any(node.get("class_type") == "SaveVideo" for item in running for node in item[2].values())

    if wait_until(video_running, 300):
        sim.stop()


@pytest.mark.slow  # slow tier: jobs in subprocesses
@pytest.mark.timeout(2400)
def test_reexecution_and_single_asset_runs_read_the_manifests_from_the_store(s3_server, tmp_path):
    place = new_place(s3_server, tmp_path)
    prompts = [{"text": "a tram in the rain", "seed": 1, **SMALL}, {"text": "a tram in the snow", "seed": 2, **SMALL}]
    # No step retries: the first run fails for good when the server goes away during its videos.
    env = {"COMFY_PIPELINE_STEP_RETRIES": "0"}
    sim = Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=60).start()
    try:
        killer = threading.Thread(target=lambda: _stop_when_a_video_runs(sim), daemon=True)
        killer.start()
        quick_to_give_up = {"server_down_timeout": 1.0, "request_timeout": 3.0}
        first = dagster(*execute_args("image_to_video_job", tmp_path, "first", prompts, quick_to_give_up),
                        cwd=tmp_path / "first", env=place.env(COMFYUI_URL=sim.url, **env))
        assert first.returncode == 1, said(first)
        with open_instance(place.home) as instance:
            parent = run_of(instance, "first").run_id
            assert materialization(instance, parent, "generated_image") is not None
            assert materialization(instance, parent, "ltx2_video") is None
            images = items_of(place, materialization(instance, parent, "generated_image"))
        assert "not reachable" in first.stdout + first.stderr
        # The first run left nothing on this disk (working folder, temporary folder, beside the instance); both
        # folders go: the re-execution and the single-asset run, each in folders of their own, share no disk
        # with it but the Dagster instance (a database, as on Kubernetes).
        assert nothing_local(tmp_path / "first") == [] and temporary_left(place) == []
        assert ours_beside_instance(place) == []
        (tmp_path / "first").rmdir()
        place.tmp.rmdir()

        sim._settings["video_seconds"] = 0.1  # the same server (same URL), back up and quick this time
        sim.start()
        script = tmp_path / "reexecute.py"
        script.write_text(REEXECUTE)
        again_cwd = tmp_path / "again"
        again_cwd.mkdir()
        again_tmp = tmp_path / "again-tmp"
        again_tmp.mkdir()
        again = subprocess.run([sys.executable, str(script), parent], cwd=again_cwd, capture_output=True, text=True,
                               timeout=600, env=place.env(again_tmp, COMFYUI_URL=sim.url, **env))
        assert again.returncode == 0, said(again)
        answer = json.loads(again.stdout.strip().splitlines()[-1])
        assert answer["success"], said(again)

        # `dagster asset materialize --select ltx2_video`: the latest images, animated again, from a third folder.
        single_tmp = tmp_path / "single-tmp"
        single_tmp.mkdir()
        single = dagster("asset", "materialize", "-m", "comfy_pipeline", "--select", "ltx2_video",
                         cwd=tmp_path / "single", env=place.env(single_tmp, COMFYUI_URL=sim.url, **env))
        assert single.returncode == 0, said(single)
    finally:
        sim.stop()

    with open_instance(place.home) as instance:
        child = answer["run_id"]
        assert materialization(instance, child, "generated_image") is None  # not made again
        videos_meta = materialization(instance, child, "ltx2_video")
        assert videos_meta["input_generated_image_from"] == "parent run (re-execution)"
        assert videos_meta["input_generated_image_run"] == parent
        videos = items_of(place, videos_meta)
        assert [v["input_image"] for v in videos] == [i["path"] for i in images]
        for item in videos:
            assert_whole(place, item, tmp_path)
        report = place.json(materialization(instance, child, "validation_report")["report_json"])
        assert all(row["verdict"] == "passed" for row in report["rows"]) and len(report["rows"]) == 4

        single_run = instance.get_runs(limit=1)[0].run_id
        single_meta = materialization(instance, single_run, "ltx2_video")
        assert single_meta["input_generated_image_from"] == "latest materialization"
        assert single_meta["input_generated_image_run"] == parent
        assert single_meta["manifest"].startswith(f"{place.location}/manifests/ltx2_video/")
        single_videos = items_of(place, single_meta)
        assert [v["input_image"] for v in single_videos] == [i["path"] for i in images]
        for item in single_videos:
            assert item["path"].startswith(f"{place.location}/runs/") and single_run in item["path"]
            assert_whole(place, item, tmp_path)
    assert temporary_left(place, again_tmp) == [] and temporary_left(place, single_tmp) == []
    assert ours_beside_instance(place) == []
    assert nothing_local(again_cwd) == [] and nothing_local(tmp_path / "single") == []


# -- the inbox ------------------------------------------------------------------------------------------------


@pytest.mark.slow  # slow tier: the Dagster daemon ticks the sensor and launches the run
@pytest.mark.timeout(1500)  # its waits are on conditions; a busy machine must not fail it
def test_a_prompt_dropped_into_the_inbox_on_the_store_runs_under_the_daemon(s3_server, tmp_path):
    place = new_place(s3_server, tmp_path)
    client = s3_server.client()
    prompts = [{"text": "a fox in the snow", "seed": 4, **SMALL}]
    client.put_object(Bucket=place.bucket, Key=f"{PREFIX}/inbox/foxes.json", Body=json.dumps(prompts).encode())
    client.put_object(Bucket=place.bucket, Key=f"{PREFIX}/inbox/broken.json", Body=b"{not json")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    log = tmp_path / "daemon.log"
    with Simulator(data_dir=tmp_path / "sim", image_seconds=0.05, video_seconds=0.1) as sim, log.open("wb") as sink:
        daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-m", "comfy_pipeline"], cwd=cwd,
                                  env=place.env(COMFYUI_URL=sim.url), stdout=sink, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            with open_instance(place.home) as instance:
                def finished() -> list[dg.DagsterRun]:
                    runs = instance.get_runs(dg.RunsFilter(tags={"comfy_pipeline/inbox_file": "foxes.json"}))
                    return [r for r in runs if r.is_finished]

                sensor_failed = "execution of evaluation_fn for sensor prompt_inbox_sensor"  # fail at once then
                done = wait_until(lambda: finished() or sensor_failed in log.read_text(errors="replace"), 900)
                assert finished(), log.read_text(errors="replace")[-5000:] if done else "no run within 900 s"
                (run,) = finished()
                rejected = wait_until(lambda: place.keys("inbox/rejected/"), timeout=300)
                assert rejected, (place.keys(), log.read_text(errors="replace")[-3000:])
                run_id = run.run_id
                status = run.status
                images = items_of(place, materialization(instance, run_id, "generated_image") or {})
                videos = items_of(place, materialization(instance, run_id, "ltx2_video") or {})
        finally:
            stop_group(daemon)
    assert status == dg.DagsterRunStatus.SUCCESS, log.read_text(errors="replace")[-5000:]
    assert [i["prompt"] for i in images] == ["a fox in the snow"] and len(videos) == 1
    for item in images + videos:
        assert item["path"].startswith(f"{place.location}/runs/") and run_id in item["path"]
        assert_whole(place, item, tmp_path)
    # The bad object is set aside with a note saying why; the good one did not wait for it.
    keys = place.keys("inbox/")
    assert f"{PREFIX}/inbox/broken.json" not in keys
    (note,) = [k for k in keys if k.startswith(f"{PREFIX}/inbox/rejected/") and k.endswith(".reason.txt")]
    assert "broken.json" in place.s3.read(place.bucket, note).decode()
    # The sensor kept nothing on the local disk: no inbox folder, no downloads left behind.
    assert nothing_local(cwd) == [] and temporary_left(place) == [] and ours_beside_instance(place) == []


# -- a kill mid-upload ------------------------------------------------------------------------------------------

UPLOAD = """
import os, sys
from pathlib import Path

from comfy_pipeline.storage import open_store, s3

s3.PART_BYTES = s3.MULTIPART_FROM = 5 * 1024 * 1024  # S3's smallest part: a big file in few requests
big = Path(sys.argv[3])
with open(big, "wb") as out:
    for _ in range(12):
        out.write(os.urandom(5 * 1024 * 1024))
store = open_store(sys.argv[1])
real = store.client.upload_part
sent = []


def upload_part(**kwargs):
    answer = real(**kwargs)
    sent.append(kwargs["PartNumber"])
    if len(sent) == 2:
        sys.stdin.read()  # stalls mid-upload here until it is killed
    return answer


store.client.upload_part = upload_part
store.put_file(big, sys.argv[2])
print("finished")  # never reached
"""


def test_a_kill_mid_upload_leaves_no_object_and_the_sweep_aborts_the_upload(s3_env, tmp_path):
    from comfy_pipeline.batch.outputs import sweep_unfinished
    from comfy_pipeline.storage import open_store

    bucket = s3_env.new_bucket()
    location = f"s3://{bucket}/{PREFIX}"
    key = "runs/20260101T000000Z_dead-run/videos/clip_00001_.mp4"
    script = tmp_path / "upload.py"
    script.write_text(UPLOAD)
    child = subprocess.Popen([sys.executable, str(script), location, key, str(tmp_path / "big.mp4")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=clean_env(**s3_env.env()))
    try:
        started = wait_until(lambda: f"{PREFIX}/{key}" in s3_env.uploads(bucket) or child.poll() is not None, 300)
        assert started and child.poll() is None, child.communicate(timeout=30)
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert s3_env.keys(bucket) == []  # nothing under the final key, nothing anywhere
    assert s3_env.uploads(bucket) == [f"{PREFIX}/{key}"]
    store = open_store(location)
    assert not store.exists(key)
    # A live run's upload is left alone; the dead run's is aborted. (Only that run is called ended: the sweep
    # also removes ended runs' local staging folders, and other tests' runs may be live on this machine.)
    assert sweep_unfinished(store, run_ended=lambda run: False) == []
    assert s3_env.uploads(bucket) == [f"{PREFIX}/{key}"]
    removed = sweep_unfinished(store, run_ended=lambda run: run == "dead-run")
    assert any(key in str(r) for r in removed), removed
    assert s3_env.uploads(bucket) == [] and s3_env.keys(bucket) == []


# -- secrets ----------------------------------------------------------------------------------------------------

NEEDLES = {"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_ACCESS_KEY_ID": ACCESS_KEY}


def leaks(data: str | bytes) -> list[str]:
    """Which credentials `data` holds. The access key id is no secret in AWS's terms, but nothing of ours has a
    reason to write it, and issue 22 says credentials never appear: both are looked for."""
    raw = data.encode() if isinstance(data, str) else data
    return [name for name, value in NEEDLES.items() if value.encode() in raw]


@pytest.mark.slow  # slow tier: the main job and a failing run in subprocesses
@pytest.mark.timeout(1200)
def test_the_aws_credentials_appear_nowhere_and_a_missing_bucket_is_named(main_run, s3_server, tmp_path):
    place, _, proc = main_run
    assert proc.returncode == 0, said(proc)
    missing = f"no-such-bucket-{os.getpid()}"
    other = Place(s3_server, missing, tmp_path / "home", tmp_path / "tmp")  # a Dagster instance of its own
    other.home.mkdir()
    other.tmp.mkdir()
    env = {**other.env(), "COMFY_PIPELINE_OUTPUT_DIR": f"s3://{missing}/outputs"}
    prompts = [{"text": "a lighthouse", "seed": 1, **SMALL}]
    failed = dagster(*execute_args("image_to_video_job", tmp_path, "missing", prompts), cwd=tmp_path / "cwd",
                     env=env)
    assert failed.returncode == 1, said(failed)
    text = failed.stdout + failed.stderr
    # Said before any GPU work, naming the bucket and what to do.
    assert f"s3://{missing}/" in text and "bucket does not exist" in text, said(failed)

    assert leaks(proc.stdout + proc.stderr) == [] and leaks(text) == []
    for key in place.keys(""):  # every object the run wrote
        assert leaks(place.s3.read(place.bucket, key)) == [], key
    for home in (place.home, other.home):
        with open_instance(home) as instance:
            (run,) = instance.get_runs()
            assert leaks(serialize_value(run)) == [], run.run_id
            for record in instance.all_logs(run.run_id):
                assert leaks(serialize_value(record)) == [], record.user_message
            if home == other.home:  # the failure the instance shows names the bucket; no GPU step ran
                messages = "\n".join(serialize_value(r) for r in instance.all_logs(run.run_id))
                assert missing in messages
                outcomes = step_outcomes(instance, run.run_id)
                assert "failure" in outcomes.values() and "generated_image" not in outcomes, outcomes
    written = files_in(place.home) + files_in(other.home) + files_in(tmp_path / "cwd")
    assert {str(p): leaks(p.read_bytes()) for p in written if leaks(p.read_bytes())} == {}
