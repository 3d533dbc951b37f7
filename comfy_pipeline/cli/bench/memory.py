"""Peak memory growth while moving one large output: downloading it from ComfyUI (our streamed download vs
`response.content`) and uploading it to an S3-compatible store (our multipart `S3Store.put_file` vs the whole file
in one PutObject).

Each client runs in its own fresh subprocess (`python -m comfy_pipeline.cli.bench.memory ...`), so neither
inherits the other's heap. The subprocess resets its peak-RSS counter (/proc/self/clear_refs, Linux) right
before the transfer and reports VmHWM afterwards minus VmRSS before.
"""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from comfy_pipeline.cli.bench.baseline import CLIENT_DESCRIPTION
from comfy_pipeline.cli.bench.report import AT_MOST, Figure

if TYPE_CHECKING:
    from comfy_pipeline.cli.bench.s3_target import S3Target

MB = 1024**2
NAME = "bench_large_output.bin"
UPLOAD_KEY = "bench/videos/bench_large_output.mp4"
UPLOAD_BASELINE = "seed-style upload: the whole file read into memory, one PutObject"


def download_memory(size_bytes: int, workdir: Path) -> Figure:
    from comfy_pipeline.simulator import Simulator  # the download subprocesses do not need it

    with Simulator(data_dir=workdir / "sim") as sim:
        with open(sim.output_dir / NAME, "wb") as handle:
            handle.truncate(size_bytes)  # sparse: the server sends size_bytes of zeros without using the disk
        ours = _probe("ours", sim.url, workdir / "ours")
        base = _probe("baseline", sim.url, workdir / "baseline")
    for result in (ours, base):
        if result["bytes"] != size_bytes:
            raise RuntimeError(f"the {result['client']} download got {result['bytes']} of {size_bytes} bytes")
    return Figure(
        "download_peak_memory_mb", f"peak RSS growth downloading {size_bytes / MB:.0f} MiB", "MB", CLIENT_DESCRIPTION,
        64.0, AT_MOST, ours["growth"] / MB, base["growth"] / MB,
        {"bytes": size_bytes, "seconds_ours": ours["seconds"], "seconds_baseline": base["seconds"]},
    )


def upload_memory(size_bytes: int, workdir: Path, target: "S3Target") -> Figure:
    """Upload a sparse `size_bytes` file (a stand-in for a big video: zeros that take no disk) to `target`'s bucket
    with S3Store.put_file, then with the baseline; checks that each object is there whole."""
    source = workdir / "upload" / "bench_large_output.mp4"
    source.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "wb") as handle:
        handle.truncate(size_bytes)
    env = target.subprocess_env()
    ours = _probe("upload-ours", target.bucket, source, env=env)
    base = _probe("upload-baseline", target.bucket, source, env=env)
    stored = {}
    for result in (ours, base):
        head = target.client().head_object(Bucket=target.bucket, Key=result["key"])
        if head["ContentLength"] != size_bytes:
            raise RuntimeError(f"the {result['client']} upload stored {head['ContentLength']} of {size_bytes} bytes")
        stored[result["client"]] = head
    etag = stored["upload-ours"].get("ETag", "").strip('"')
    return Figure(
        "upload_peak_memory_mb", f"peak RSS growth uploading {size_bytes / MB:.0f} MiB to S3", "MB", UPLOAD_BASELINE,
        64.0, AT_MOST, ours["growth"] / MB, base["growth"] / MB,
        {"bytes": size_bytes, "seconds_ours": ours["seconds"], "seconds_baseline": base["seconds"],
         "object": f"s3://{target.bucket}/{ours['key']}", "stored_bytes": stored["upload-ours"]["ContentLength"],
         "parts": int(etag.rsplit("-", 1)[1]) if "-" in etag else 1, "endpoint": target.endpoint},
    )


def _probe(client: str, where: str, dest: Path, env: dict[str, str] | None = None) -> dict:
    if client in ("ours", "baseline"):
        dest.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli.bench.memory", client, where, str(dest)],
        capture_output=True, text=True, timeout=1800, check=False, env=env,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {client} subprocess failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def status_kb(field: str) -> int:
    """A kB field of this process's /proc/self/status (VmRSS, VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _download(client: str, url: str, dest: Path) -> tuple[int, int, float]:
    """Download NAME with `client`: (bytes written, VmRSS in kB just before, seconds). Imports and connection
    come first, so they are not counted."""
    if client == "ours":
        from comfy_pipeline import settings
        from comfy_pipeline.comfyui.files import OutputFile

        ours = settings.make_client(url, creds=settings.NO_CREDENTIALS)
        ours.system_stats()
        before, start = _reset_peak(), time.monotonic()
        path = ours.download(OutputFile("bench", NAME, "", "output", "other"), dest)
        return path.stat().st_size, before, time.monotonic() - start
    from comfy_pipeline.cli.bench.baseline import BaselineClient

    base = BaselineClient(url)
    base.session.get(f"{base.base}/system_stats").raise_for_status()
    before, start = _reset_peak(), time.monotonic()
    data = base.download({"filename": NAME, "subfolder": "", "type": "output"})
    (dest / NAME).write_bytes(data)
    return len(data), before, time.monotonic() - start


def _upload(client: str, bucket: str, source: Path) -> tuple[int, int, float, str]:
    """Upload `source` to `bucket` (AWS_ENDPOINT_URL and credentials from the environment): (bytes, VmRSS in kB
    just before, seconds, key). boto3's import, client and connection come first, so they are not counted."""
    from comfy_pipeline.storage.s3 import S3Store

    store = S3Store(bucket)
    store.client.head_bucket(Bucket=bucket)
    size = source.stat().st_size
    if client == "upload-ours":
        before, start = _reset_peak(), time.monotonic()
        key = store.put_file(source, UPLOAD_KEY, free_name=True)
        return size, before, time.monotonic() - start, key
    key = UPLOAD_KEY.replace("bench/", "bench-baseline/", 1)
    before, start = _reset_peak(), time.monotonic()
    store.client.put_object(Bucket=bucket, Key=key, Body=source.read_bytes())  # the whole file in memory
    return size, before, time.monotonic() - start, key


def _reset_peak() -> int:
    """Set VmHWM to VmRSS now, so the peak read later is the transfer's alone; returns that VmRSS (kB)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_kb("VmRSS")


def main(argv: list[str]) -> int:
    client, where, path = argv
    extra = {}
    if client.startswith("upload-"):
        written, before_kb, seconds, extra["key"] = _upload(client, where, Path(path))
    else:
        written, before_kb, seconds = _download(client, where, Path(path))
    growth = (status_kb("VmHWM") - before_kb) * 1024
    print(json.dumps({"client": client, "bytes": written, "growth": growth, "seconds": round(seconds, 3), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
