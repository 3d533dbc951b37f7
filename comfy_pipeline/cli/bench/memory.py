"""Peak memory growth while downloading one large output: our streamed download vs `response.content`.

Each client downloads in its own fresh subprocess (`python -m comfy_pipeline.cli.bench.memory ...`), so neither
inherits the other's heap. The subprocess resets its peak-RSS counter (/proc/self/clear_refs, Linux) right
before the download and reports VmHWM afterwards minus VmRSS before.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

from comfy_pipeline.cli.bench.baseline import CLIENT_DESCRIPTION
from comfy_pipeline.cli.bench.report import AT_MOST, Figure

MB = 1024**2
NAME = "bench_large_output.bin"


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


def _probe(client: str, url: str, dest: Path) -> dict:
    dest.mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "comfy_pipeline.cli.bench.memory", client, url, str(dest)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {client} download subprocess failed: {done.stderr.strip()[-500:]}")
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


def _reset_peak() -> int:
    """Set VmHWM to VmRSS now, so the peak read later is the download's alone; returns that VmRSS (kB)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return status_kb("VmRSS")


def main(argv: list[str]) -> int:
    client, url, dest = argv
    written, before_kb, seconds = _download(client, url, Path(dest))
    growth = (status_kb("VmHWM") - before_kb) * 1024
    print(json.dumps({"client": client, "bytes": written, "growth": growth, "seconds": round(seconds, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
