"""The prompt queue and history, shaped like ComfyUI's `execution.PromptQueue`.

One priority heap ordered by `number` (lower runs first), the running item, and the history in insertion
order. All access happens on the simulator's event loop, so no locks are needed.
"""

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

MAXIMUM_HISTORY_SIZE = 10000


@dataclass
class QueueItem:
    number: float
    prompt_id: str
    prompt: dict
    extra_data: dict
    outputs_to_execute: list[str]

    def as_json(self) -> list:
        """The wire form: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


@dataclass
class PromptQueue:
    heap: list[tuple[float, str, int, QueueItem]] = field(default_factory=list)
    running: QueueItem | None = None
    history: dict[str, dict] = field(default_factory=dict)
    _tiebreak: itertools.count = field(default_factory=itertools.count)

    def put(self, item: QueueItem) -> None:
        heapq.heappush(self.heap, (item.number, item.prompt_id, next(self._tiebreak), item))

    def pop(self) -> QueueItem | None:
        if not self.heap:
            return None
        self.running = heapq.heappop(self.heap)[3]
        return self.running

    def pending(self) -> list[QueueItem]:
        """Pending items in heap order (the real server does not sort them either)."""
        return [entry[3] for entry in self.heap]

    def remaining(self) -> int:
        return len(self.heap) + (1 if self.running is not None else 0)

    def delete_pending(self, prompt_id: str) -> bool:
        for index, entry in enumerate(self.heap):
            if entry[3].prompt_id == prompt_id:
                self.heap.pop(index)
                heapq.heapify(self.heap)
                return True
        return False

    def clear_pending(self) -> None:
        self.heap.clear()

    def finish(self, item: QueueItem, result: dict[str, Any]) -> None:
        """Move the running item into history. A reused prompt_id keeps its old position, as in a dict."""
        if len(self.history) > MAXIMUM_HISTORY_SIZE:
            self.history.pop(next(iter(self.history)))
        self.history[item.prompt_id] = {"prompt": item.as_json(), "outputs": {}, **result}
        self.running = None

    def get_history(self, max_items: int | None = None, offset: int = -1) -> dict[str, dict]:
        """`PromptQueue.get_history` without an id: a negative offset with max_items means "the last N"."""
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: dict[str, dict] = {}
        for index, (prompt_id, entry) in enumerate(self.history.items()):
            if index >= offset:
                out[prompt_id] = entry
                if max_items is not None and len(out) >= max_items:
                    break
        return out
