"""Behaviours checked against a real ComfyUI 0.33.0 (CPU, loopback): its answers are recorded in
fixtures/real_server/ and the simulator must give the same ones. Interrupts act at the next node boundary,
whatever the node; the default cache keeps only the most recent prompt's outputs."""

import json
import time
import uuid

import pytest
import requests

from comfy_pipeline.simulator import Simulator
from comfy_pipeline_tests.support.helpers import FIXTURES, wait_for_history, wait_until

RECORDED = json.loads((FIXTURES / "real_server" / "node_boundaries_and_cache.json").read_text())


def submit(sim: Simulator, graph: dict) -> str:
    prompt_id = str(uuid.uuid4())
    answer = requests.post(f"{sim.url}/prompt", json={"prompt": graph, "prompt_id": prompt_id}, timeout=30)
    assert answer.status_code == 200, answer.text
    return prompt_id


def running(sim: Simulator) -> bool:
    return bool(requests.get(f"{sim.url}/queue", timeout=5).json()["queue_running"])


def test_default_cache_reuses_only_the_most_recent_prompt(simulator):
    case = RECORDED["cache_a_b_a_a"]
    for expected in case["runs"]:
        entry = wait_for_history(simulator, submit(simulator, case["graphs"][expected["prompt"]]))
        cached = next(m[1]["nodes"] for m in entry["status"]["messages"] if m[0] == "execution_cached")
        assert (entry["status"]["status_str"], sorted(cached)) == (expected["status"], expected["cached_nodes"]), \
            f"prompt {expected['prompt']}"


@pytest.mark.parametrize("targeted", [True, False], ids=["targeted", "global"])
def test_an_interrupt_stops_a_chain_of_plain_nodes_at_the_next_node_boundary(simulator, targeted):
    case = RECORDED["interrupt_chain"]
    prompt_id = submit(simulator, case["graph"])
    assert wait_until(lambda: running(simulator), 30)
    time.sleep(case["interrupt_after_running_s"])
    started = time.monotonic()
    requests.post(f"{simulator.url}/interrupt", json={"prompt_id": prompt_id} if targeted else {}, timeout=5)
    entry = wait_for_history(simulator, prompt_id, timeout=30)
    stopped_after = time.monotonic() - started
    messages = entry["status"]["messages"]
    assert entry["status"]["status_str"] == case["status"] == "error"
    assert [m[0] for m in messages] == case["messages"]
    assert messages[-1][1]["node_type"] == case["node_type"]
    # The real server stopped 0.18 s after the interrupt (one ImageScale of 2048 px); a node boundary away.
    assert stopped_after < 2.0, f"the chain ran on {stopped_after:.1f} s after the interrupt"
    assert 0 < len(messages[-1][1]["executed"]) < len(case["graph"]) - 1
