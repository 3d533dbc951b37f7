"""`Simulator`: the simulated ComfyUI server running in a background thread with its own event loop.

Used by the tests (ephemeral port), by the pipeline as its embedded default when no real server is
configured, and by the `comfy-pipeline simulator` command.
"""

import asyncio
import contextlib
import shutil
import tempfile
import threading
from pathlib import Path

from aiohttp import web

from comfy_pipeline.comfyui.schema import OFFICIAL_MODELS
from comfy_pipeline.simulator.faults import Faults
from comfy_pipeline.simulator.server import SimServer

START_TIMEOUT = 15.0


class Simulator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        data_dir: str | Path | None = None,
        image_seconds: float = 0.05,
        video_seconds: float = 0.2,
        models: dict[str, list[str]] | None = None,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        fault_seed: int = 0,
    ) -> None:
        self.host = host
        self.port = port
        self._data_dir = Path(data_dir) if data_dir is not None else None
        self._owns_data_dir = data_dir is None
        self._faults = Faults(seed=fault_seed)  # the same seed and requests draw the same faults
        self._settings = dict(
            image_seconds=image_seconds,
            video_seconds=video_seconds,
            models=models if models is not None else OFFICIAL_MODELS,
            token=token,
            username=username,
            password=password,
        )
        self._server: SimServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def __repr__(self) -> str:  # no credentials in here
        state = "running" if self._thread is not None else "stopped"
        return f"Simulator({self.url if self._thread is not None else self.host}, {state})"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise RuntimeError("the simulator has no data directory before start()")
        return self._data_dir

    @property
    def input_dir(self) -> Path:
        return self.data_dir / "input"

    @property
    def output_dir(self) -> Path:
        return self.data_dir / "output"

    @property
    def temp_dir(self) -> Path:
        return self.data_dir / "temp"

    def start(self) -> "Simulator":
        if self._thread is not None:
            return self
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="comfy-simulator-"))
        for folder in (self.input_dir, self.output_dir, self.temp_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._server = SimServer(
            input_dir=self.input_dir.resolve(),
            output_dir=self.output_dir.resolve(),
            temp_dir=self.temp_dir.resolve(),
            faults=self._faults,
            **self._settings,
        )
        started = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._serve, args=(started, failure), name="comfy-simulator",
                                        daemon=True)
        self._thread.start()
        if not started.wait(START_TIMEOUT):
            raise RuntimeError(f"the ComfyUI simulator did not start within {START_TIMEOUT:.0f} s")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def _serve(self, started: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            self._runner = web.AppRunner(self._server.make_app(), handle_signals=False, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, self.port)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
        except BaseException as error:  # reported to start()'s caller
            failure.append(error)
            with contextlib.suppress(Exception):  # the app's background tasks started already: end them
                if self._runner is not None:
                    loop.run_until_complete(self._runner.cleanup())
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            started.set()
            return
        started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._runner.cleanup())
            # Let encoders already running in worker threads finish before the data folder goes away.
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def stop(self) -> None:
        """Stop serving (idempotent); a data directory the simulator made itself is removed."""
        if self._thread is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)
        self._thread = None
        self._loop = None
        if self._owns_data_dir and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def __enter__(self) -> "Simulator":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def set_fault(self, kind: str, *, rate: float = 1.0, count: int | None = None, delay: float = 0.5) -> None:
        """Inject a fault (see faults.KINDS); `count` limits how many requests/prompts it hits."""
        self._faults.set(kind, rate=rate, count=count, delay=delay)

    def clear_faults(self) -> None:
        self._faults.clear()

    def fault_hits(self) -> dict[str, int]:
        """How many requests / prompts each fault kind has hit since the simulator was made."""
        return self._faults.hits()

    def hold_sampling(self) -> None:
        """Hold the "GPU": from now on a prompt that reaches its first sampler step waits there (interruptible,
        listed as running) until `release_sampling` lets it on. Tests use it to wait on a state, not on time."""
        self._call(self._set_permits(0))

    def release_sampling(self, prompts: int | None = None) -> None:
        """Let `prompts` more prompts sample (in the order they reach it); None: end the hold."""
        self._call(self._set_permits(prompts, add=prompts is not None))

    async def _set_permits(self, permits: int | None, add: bool = False) -> None:
        current = self._server.sampling_permits
        self._server.sampling_permits = (current or 0) + permits if add else permits

    def restart(self) -> None:
        """Behave like a server restart: queue, history and cache forgotten, sockets dropped, the running
        prompt abandoned without a history entry."""
        self._call(self._server.restart())

    def started_prompts(self) -> list[dict]:
        """Every prompt the worker started, in order, also across restarts: {prompt_id, filename_prefixes,
        faults, ended}; `ended` is the last execution message (execution_success, ...), None when a restart
        abandoned the prompt."""
        return self._call(self._copy_started())

    async def _copy_started(self) -> list[dict]:
        return [dict(entry) for entry in self._server.started]

    def busy_intervals(self) -> list[tuple[float, float]]:
        """time.monotonic() (start, end) of every prompt the worker ran."""
        return self._call(self._copy_busy())

    async def _copy_busy(self) -> list[tuple[float, float]]:
        return list(self._server.busy)

    def _call(self, coroutine):
        if self._loop is None:
            coroutine.close()
            raise RuntimeError("the simulator is not running; call start() first")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)
