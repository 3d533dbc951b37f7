"""Running one queued prompt the way ComfyUI's PromptExecutor does, event for event.

Per prompt: execution_start, execution_cached (nodes whose output is cached), then for every node the
execution list picks (output nodes first, like `ux_friendly_pick_node`): progress_state(running),
executing, [progress per sampler step], [executed], progress_state(finished). A cached output node only
sends executed (with its old outputs) and progress_state. Then execution_success / execution_error /
execution_interrupted. The caller writes history and sends status and executing{node: null}.
Outputs are cached by a content signature (class, inputs, upstream signatures; LoadImage adds the file
hash), so an identical resubmit runs nothing and re-sends the old files.
"""

import asyncio
import dataclasses
import hashlib
import json
import time
import traceback
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from comfy_pipeline.comfyui.validation import full_type_name
from comfy_pipeline.simulator.faults import CONTENT
from comfy_pipeline.simulator.graph_eval import (
    SAMPLER_CLASSES,
    NodeContext,
    NodeResult,
    evaluate,
    loader_file_hash,
)
from comfy_pipeline.simulator.queue import QueueItem
from comfy_pipeline.simulator.render import to_pixels
from comfy_pipeline.simulator.values import Images, Latent

CACHE_SIZE = 512
EAGER_FRAMES = 4  # image batches up to this size are painted at their node; longer ones (video) when saved
HOLD_POLL_S = 0.01  # how often a held prompt asks whether it may sample now


class Interrupted(Exception):
    pass


def is_link(value: Any) -> bool:
    """`graph_utils.is_link`."""
    return (
        isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], (int, float)) and not isinstance(value[1], bool)
    )


class OutputCache:
    """Node outputs by signature. Like ComfyUI's default (classic) cache, a prompt keeps only what its own nodes
    can reuse: entries of nodes not in the prompt are dropped when it starts (`keep_only`). So after A, B, A
    the third A runs again, unless B shared its nodes (checked against a real 0.33.0 server)."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, NodeResult] = OrderedDict()

    def get(self, signature: str) -> NodeResult | None:
        entry = self._entries.get(signature)
        if entry is not None:
            self._entries.move_to_end(signature)
        return entry

    def put(self, signature: str, result: NodeResult) -> None:
        self._entries[signature] = result
        self._entries.move_to_end(signature)
        while len(self._entries) > CACHE_SIZE:
            self._entries.popitem(last=False)

    def keep_only(self, wanted: set[str]) -> None:
        for signature in [s for s in self._entries if s not in wanted]:
            del self._entries[signature]

    def clear(self) -> None:
        self._entries.clear()


def signatures(prompt: dict, input_dir: Path) -> dict[str, str]:
    """A content signature per node: equal signature = equal output, whatever the node ids are."""
    done: dict[str, str] = {}

    def signature(node_id: str) -> str:
        if node_id in done:
            return done[node_id]
        done[node_id] = "cycle"  # validation rejects cycles; this only guards the recursion
        node = prompt[node_id]
        parts: list[Any] = [node["class_type"]]
        for name in sorted(node["inputs"]):
            value = node["inputs"][name]
            if is_link(value) and value[0] in prompt:
                parts.append([name, "link", signature(value[0]), value[1]])
            else:
                parts.append([name, value])
        if node["class_type"] == "LoadImage" and isinstance(node["inputs"].get("image"), str):
            parts.append(loader_file_hash(input_dir, node["inputs"]["image"]))
        done[node_id] = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
        return done[node_id]

    for node_id in prompt:
        signature(node_id)
    return done


class ExecutionList:
    """`comfy_execution.graph.ExecutionList` without lazy inputs: a topological dissolve of the needed graph."""

    def __init__(self, prompt: dict, is_cached: Callable[[str], bool], is_output: Callable[[str], bool]):
        self.prompt = prompt
        self.is_cached = is_cached
        self.is_output = is_output
        self.pending: dict[str, bool] = {}
        self.block_count: dict[str, int] = {}
        self.blocking: dict[str, dict[str, bool]] = {}

    def add_node(self, node_id: str) -> None:
        stack, links = [node_id], []
        while stack:
            unique_id = stack.pop()
            if unique_id in self.pending:
                continue
            self.pending[unique_id] = True
            self.block_count[unique_id] = 0
            self.blocking[unique_id] = {}
            for value in self.prompt[unique_id]["inputs"].values():
                if is_link(value):
                    if not self.is_cached(value[0]):
                        stack.append(value[0])
                    links.append((value[0], unique_id))
        for from_id, to_id in links:
            if not self.is_cached(from_id):
                self.add_node(from_id)
                if to_id not in self.blocking[from_id]:
                    self.blocking[from_id][to_id] = True
                    self.block_count[to_id] += 1

    def pick(self) -> str | None:
        """The next node to run, preferring output nodes and what feeds them soonest."""
        ready = [node_id for node_id in self.pending if self.block_count[node_id] == 0]
        if not ready:
            return None
        for node_id in ready:
            if self.is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self.is_output(b) for b in self.blocking[node_id]):
                return node_id
        for node_id in ready:
            if any(self.is_output(c) for b in self.blocking[node_id] for c in self.blocking[b]):
                return node_id
        return ready[0]

    def complete(self, node_id: str) -> None:
        del self.pending[node_id]
        for blocked in self.blocking.pop(node_id):
            self.block_count[blocked] -= 1


@dataclass
class RunFaults:
    """The per-prompt faults drawn for this run."""

    execution_error: bool = False
    drop_ws: bool = False
    restart: bool = False
    corrupt_output: bool = False
    hostile_filename: bool = False
    black_output: bool = False
    flat_output: bool = False
    frozen_output: bool = False
    off_start_output: bool = False
    silent_output: bool = False

    def kinds(self) -> list[str]:
        """The fault kinds drawn, by their faults.KINDS names."""
        return [name.replace("_", "-") for name, drawn in vars(self).items() if drawn]

    def content(self) -> frozenset[str]:
        """The content kinds drawn (faults.CONTENT): what the save nodes make of this prompt's outputs."""
        return frozenset(kind for kind in self.kinds() if kind in CONTENT)


@dataclass
class RunEnvironment:
    """What a run needs from the server; `server.py` fills it in."""

    object_info: dict
    cache: OutputCache
    input_dir: Path
    output_dir: Path
    temp_dir: Path
    image_seconds: float
    video_seconds: float
    send: Callable[[str, dict, str | None], None]  # queue a ws JSON message (sid None = broadcast)
    send_binary: Callable[[bytes, str | None], None]
    interrupt_requested: Callable[[], bool]
    on_mid_run: Callable[[RunFaults], Awaitable[None]]  # drop-ws / restart faults fire here
    sampling_permitted: Callable[[], bool] = lambda: True  # False: held (a test holds the GPU), ask again


@dataclass
class PromptRun:
    env: RunEnvironment
    item: QueueItem
    faults: RunFaults
    messages: list = field(default_factory=list)
    executed: list[str] = field(default_factory=list)
    ui_outputs: dict[str, dict] = field(default_factory=dict)
    progress: dict[str, dict] = field(default_factory=dict)
    sampling_allowed: bool = False  # a prompt takes one sampling permit, at its first sampler step
    success: bool = True
    last_node: str | None = None  # told to a client that reconnects mid-run

    @property
    def client_id(self) -> str | None:
        return self.item.extra_data.get("client_id")

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id

    def add_message(self, event: str, data: dict, broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        self.messages.append([event, data])
        if self.client_id is not None or broadcast:
            self.env.send(event, data, self.client_id)

    def send_progress_state(self) -> None:
        nodes = {
            node_id: {
                "value": state["value"], "max": state["max"], "state": state["state"],
                "node_id": node_id, "prompt_id": self.prompt_id,
                "display_node_id": node_id, "parent_node_id": None, "real_node_id": node_id,
            }
            for node_id, state in self.progress.items()
        }
        self.env.send("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes}, self.client_id)

    def set_progress(self, node_id: str, state: str, value: float, maximum: float) -> None:
        self.progress[node_id] = {"value": value, "max": maximum, "state": state}
        self.send_progress_state()

    async def execute(self) -> dict:
        """Run the prompt; returns the history fields (outputs, status, meta)."""
        prompt, env = self.item.prompt, self.env
        self.add_message("execution_start", {"prompt_id": self.prompt_id}, broadcast=False)
        node_signatures = signatures(prompt, env.input_dir)
        env.cache.keep_only(set(node_signatures.values()))  # ComfyUI: set_prompt + clean_unused
        cached_nodes = [node_id for node_id in prompt if env.cache.get(node_signatures[node_id]) is not None]
        self.add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": self.prompt_id}, broadcast=False)

        def is_cached(node_id: str) -> bool:
            return node_id in prompt and env.cache.get(node_signatures[node_id]) is not None

        def is_output(node_id: str) -> bool:
            return env.object_info[prompt[node_id]["class_type"]].get("output_node") is True

        execution = ExecutionList(prompt, is_cached, is_output)
        for node_id in self.item.outputs_to_execute:
            execution.add_node(node_id)
        samplers = [n for n in execution.pending if prompt[n]["class_type"] in SAMPLER_CLASSES and not is_cached(n)]
        error_node = samplers[0] if samplers else next(iter(execution.pending), None)
        mid_run_done = False

        current = None
        try:
            while execution.pending:
                current = execution.pick()
                if current is None:
                    raise RuntimeError("Dependency cycle detected")
                signature = node_signatures[current]
                cached = env.cache.get(signature)
                if cached is not None:
                    self.send_cached(current, cached)
                else:
                    self.set_progress(current, "running", 0.0, 1.0)
                    self.last_node = current
                    if self.client_id is not None:
                        self.env.send("executing", {"node": current, "display_node": current,
                                                    "prompt_id": self.prompt_id}, self.client_id)
                    if not mid_run_done:
                        mid_run_done = True
                        await env.on_mid_run(self.faults)
                    if env.interrupt_requested():
                        raise Interrupted()
                    result = await self.run_node(current, node_signatures, len(samplers), current == error_node)
                    env.cache.put(signature, result)
                    self.executed.append(current)
                    if result.ui is not None:
                        self.record_ui(current, result.ui)
                    self.set_progress(current, "finished", 1.0, 1.0)
                execution.complete(current)
        except Interrupted:
            self.success = False
            self.add_message("execution_interrupted", {
                "prompt_id": self.prompt_id, "node_id": current, "node_type": prompt[current]["class_type"],
                "executed": list(self.executed),
            }, broadcast=True)
        except Exception as ex:  # a node raised: report it like ComfyUI's execution_error
            self.success = False
            self.add_message("execution_error", {
                "prompt_id": self.prompt_id,
                "node_id": current,
                "node_type": prompt[current]["class_type"] if current in prompt else None,
                "executed": list(self.executed),
                "exception_message": f"{ex}\n",
                "exception_type": full_type_name(type(ex)),
                "traceback": traceback.format_tb(ex.__traceback__),
                "current_inputs": self.format_inputs(prompt[current]["inputs"]) if current in prompt else {},
                "current_outputs": list(prompt),
            }, broadcast=False)
        else:
            self.add_message("execution_success", {"prompt_id": self.prompt_id}, broadcast=False)

        self.last_node = None
        return {
            "outputs": self.ui_outputs,
            "status": {"status_str": "success" if self.success else "error", "completed": self.success,
                       "messages": self.messages},
            "meta": {node_id: {"node_id": node_id, "display_node": node_id, "parent_node": None,
                               "real_node_id": node_id}
                     for node_id in self.ui_outputs},
        }

    def send_cached(self, node_id: str, cached: NodeResult) -> None:
        if cached.ui is not None:
            self.ui_outputs[node_id] = cached.ui
            if self.client_id is not None:
                self.env.send("executed", {"node": node_id, "display_node": node_id, "output": cached.ui,
                                           "prompt_id": self.prompt_id}, self.client_id)
        self.progress[node_id] = {"value": 1, "max": 1, "state": "finished"}
        self.send_progress_state()

    def record_ui(self, node_id: str, ui: dict) -> None:
        if self.faults.hostile_filename:
            ui = {**ui, "images": [{**ref, "filename": "../../" + ref["filename"],
                                    "subfolder": "../.."} for ref in ui["images"]]}
        if self.faults.corrupt_output:
            for ref in ui["images"]:
                folder = self.env.output_dir if ref["type"] == "output" else self.env.temp_dir
                path = folder / ref["subfolder"] / ref["filename"]
                if path.is_file():
                    with open(path, "r+b") as handle:
                        handle.truncate(path.stat().st_size // 2)
        self.ui_outputs[node_id] = ui
        if self.client_id is not None:
            self.env.send("executed", {"node": node_id, "display_node": node_id, "output": ui,
                                       "prompt_id": self.prompt_id}, self.client_id)

    async def run_node(self, node_id: str, node_signatures: dict[str, str], sampler_count: int,
                       fault_here: bool) -> NodeResult:
        prompt, env = self.item.prompt, self.env
        node = prompt[node_id]
        inputs = {}
        for name, value in node["inputs"].items():
            if is_link(value):
                upstream = env.cache.get(node_signatures[value[0]])
                inputs[name] = upstream.outputs[int(value[1])]
            else:
                inputs[name] = value
        if fault_here and self.faults.execution_error:
            # A plain RuntimeError, as torch reports CUDA failures.
            raise RuntimeError("CUDA error: an illegal memory access was encountered (simulated fault)")

        async def sample(steps: int, latent: Latent) -> None:
            seconds = env.video_seconds if latent.frames > 1 else env.image_seconds
            await self.spend_gpu_time(node_id, max(int(steps), 1), seconds / max(sampler_count, 1))

        async def send_binary(data: bytes) -> None:
            env.send_binary(data, self.client_id)

        loop = asyncio.get_running_loop()
        ctx = NodeContext(
            node_id=node_id,
            class_type=node["class_type"],
            output_count=len(env.object_info[node["class_type"]].get("output", [])),
            input_dir=env.input_dir,
            output_dir=env.output_dir,
            temp_dir=env.temp_dir,
            run_blocking=lambda function, *args: loop.run_in_executor(None, function, *args),
            sample=sample,
            send_binary=send_binary,
            output_faults=self.faults.content(),
        )
        result = await evaluate(ctx, inputs)
        # Paint small batches (images, not video frames) at the node that makes them, as a real server computes
        # each node's tensor: the work, and so an interrupt's next node boundary, falls where it does on ComfyUI.
        outputs = []
        for value in result.outputs:
            if isinstance(value, Images) and value.count <= EAGER_FRAMES and value.source[0] != "pixels":
                value = await loop.run_in_executor(None, to_pixels, value)
            outputs.append(value)
        return dataclasses.replace(result, outputs=tuple(outputs))

    async def spend_gpu_time(self, node_id: str, steps: int, seconds: float) -> None:
        """Sampler steps: progress + progress_state per step, interruptible at every step like a real sampler."""
        while not self.sampling_allowed:  # held by a test until it releases this prompt; interruptible meanwhile
            self.sampling_allowed = self.env.sampling_permitted()
            if not self.sampling_allowed:
                await asyncio.sleep(HOLD_POLL_S)
                if self.env.interrupt_requested():
                    raise Interrupted()
        for step in range(1, steps + 1):
            await asyncio.sleep(seconds / steps)
            if self.env.interrupt_requested():
                raise Interrupted()
            self.progress[node_id] = {"value": step, "max": steps, "state": "running"}
            self.send_progress_state()
            self.env.send("progress", {"value": step, "max": steps, "prompt_id": self.prompt_id, "node": node_id},
                          self.client_id)

    @staticmethod
    def format_inputs(inputs: dict) -> dict:
        """execution_error.current_inputs: {name: [value]}, linked inputs shown as the object they carried."""
        return {name: [f"<linked output {value[0]}:{value[1]}>" if is_link(value) else value]
                for name, value in inputs.items()}
