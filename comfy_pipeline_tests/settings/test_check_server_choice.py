"""`comfy-pipeline check --comfyui-url A` tests A, whatever COMFYUI_URLS says: the flag wins over the
environment for the check's own calls (pre-flight, queue-ahead) and for the runs it starts."""

import json
import os
import subprocess
import sys

from comfy_pipeline.simulator import Simulator


def test_the_url_flag_wins_over_comfyui_urls_for_every_prompt_and_the_report(tmp_path):
    with Simulator(data_dir=tmp_path / "a", image_seconds=0.05) as a, \
            Simulator(data_dir=tmp_path / "b", image_seconds=0.05) as b:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("DAGSTER_", "COMFYUI_", "COMFY_PIPELINE_", "TEST_TIMEOUT"))}
        proc = subprocess.run(
            [sys.executable, "-m", "comfy_pipeline.cli", "check", "--test-type", "image-only", "--json",
             "--prompt", "a red fox", "--prompt", "a blue boat", "--seed", "5",
             "--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out"), "--comfyui-url", a.url],
            cwd=tmp_path, env={**clean, "COMFYUI_URLS": b.url}, capture_output=True, text=True, timeout=300,
        )
        on_a, on_b = a.started_prompts(), b.started_prompts()
    assert proc.returncode == 0, proc.stderr
    assert len(on_a) == 2 and on_b == [], (len(on_a), len(on_b))
    report = json.loads(proc.stdout)
    assert report["server"] == a.url
