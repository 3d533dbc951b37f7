"""The simulated ComfyUI 0.33.0 HTTP + WebSocket server (aiohttp, like the real one).

Handlers follow ComfyUI's `server.py` line by line where the wire behaviour depends on it (status codes,
empty bodies, which errors become aiohttp's plain-text 500). Every route is also served under /api.
State lives on the event loop: one worker task runs prompts, one publisher task sends ws messages in
order (like the real `messages` queue), HTTP handlers only touch state between awaits.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import mimetypes
import os
import sys
import time
import uuid
from io import BytesIO
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from PIL import Image

from comfy_pipeline.comfyui.schema import object_info_with_models
from comfy_pipeline.comfyui.validation import validate_prompt
from comfy_pipeline.simulator.executor import OutputCache, PromptRun, RunEnvironment, RunFaults
from comfy_pipeline.simulator.faults import CONTENT, Faults
from comfy_pipeline.simulator.graph_eval import resolve_input_image, write_atomically
from comfy_pipeline.simulator.queue import PromptQueue, QueueItem

COMFYUI_VERSION = "0.33.0"
MAX_UPLOAD_SIZE = 104857600
FEATURES = {
    "supports_preview_metadata": True,
    "supports_model_type_tags": True,
    "max_upload_size": MAX_UPLOAD_SIZE,
    "extension": {"manager": {"supports_v4": True}},
    "node_replacements": True,
    "assets": False,
}
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
    "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "latent_upscale_models",
    "custom_nodes", "datasets", "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
    "background_removal", "frame_interpolation", "geometry_estimation", "optical_flow", "detection",
]
# extra_data keys the real server keeps out of queue and history (API-node credentials).
SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")
# /view serves these as downloads, never inline (ComfyUI's stored-XSS guard).
DANGEROUS_CONTENT_TYPES = {
    "text/html", "application/xhtml+xml", "text/javascript", "application/javascript", "text/css",
    "image/svg+xml", "application/xml", "text/xml",
}
SERVER_ERROR_TEXT = "500 Internal Server Error\n\nServer got itself in trouble"


class SimServer:
    def __init__(
        self,
        *,
        input_dir: Path,
        output_dir: Path,
        temp_dir: Path,
        image_seconds: float,
        video_seconds: float,
        models: dict[str, list[str]],
        faults: Faults,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.input_dir, self.output_dir, self.temp_dir = input_dir, output_dir, temp_dir
        self.image_seconds, self.video_seconds = image_seconds, video_seconds
        self.models = {folder: sorted(files) for folder, files in models.items()}
        self.object_info = object_info_with_models(self.models)
        self.faults = faults
        self._token = token
        self._basic = None if username is None else (username, password or "")
        self.queue = PromptQueue()
        self.number = 0
        self.cache = OutputCache()
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.interrupt_flag = False
        self.free_memory_requested = False
        # Prompts that may still start sampling (tests hold the "GPU" and release it prompt by prompt, so they wait
        # on a condition, not on time); None: no hold.
        self.sampling_permits: int | None = None
        self.busy: list[tuple[float, float]] = []
        self.started: list[dict] = []  # every prompt the worker started, with the faults drawn for it (kept on restart)
        self.messages: asyncio.Queue | None = None
        self.queue_changed: asyncio.Event | None = None
        self.worker_task: asyncio.Task | None = None
        self.current_run: PromptRun | None = None
        self.publisher_task: asyncio.Task | None = None

    # --- app -------------------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_UPLOAD_SIZE,
                              middlewares=[self.auth_middleware, self.fault_middleware])
        routes = [
            ("GET", "/ws", self.websocket),
            ("GET", "/system_stats", self.system_stats),
            ("GET", "/features", self.features),
            ("GET", "/embeddings", self.embeddings),
            ("GET", "/models", self.model_folders),
            ("GET", "/models/{folder}", self.model_files),
            ("GET", "/object_info", self.get_object_info),
            ("GET", "/object_info/{node_class}", self.get_object_info_class),
            ("GET", "/prompt", self.get_prompt),
            ("POST", "/prompt", self.post_prompt),
            ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue),
            ("GET", "/history", self.get_history),
            ("GET", "/history/{prompt_id}", self.get_history_id),
            ("POST", "/history", self.post_history),
            ("POST", "/interrupt", self.post_interrupt),
            ("POST", "/free", self.post_free),
            ("POST", "/upload/image", self.upload_image),
            ("GET", "/view", self.view),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, "/api" + path, handler)
            app.router.add_route(method, path, handler)
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.messages = asyncio.Queue()
        self.queue_changed = asyncio.Event()
        self.publisher_task = asyncio.create_task(self.publish_loop())
        self.worker_task = asyncio.create_task(self.worker())

    async def _on_shutdown(self, app: web.Application) -> None:
        for task in (self.worker_task, self.publisher_task):
            if task is not None:
                task.cancel()
        await self.close_sockets(WSCloseCode.GOING_AWAY)

    @web.middleware
    async def auth_middleware(self, request: web.Request, handler):
        protected = self._token is not None or self._basic is not None
        if protected and not self._authorized(request.headers.get("Authorization", "")):
            return web.Response(status=401, text="401: Unauthorized",
                                headers={"WWW-Authenticate": 'Bearer realm="ComfyUI simulator"'})
        return await handler(request)

    def _authorized(self, header: str) -> bool:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() == "bearer" and self._token is not None:
            return hmac.compare_digest(credentials.strip().encode(), self._token.encode())
        if scheme.lower() == "basic" and self._basic is not None:
            try:
                user, _, password = base64.b64decode(credentials.strip()).decode().partition(":")
            except ValueError:
                return False
            return hmac.compare_digest(f"{user}:{password}".encode(), f"{self._basic[0]}:{self._basic[1]}".encode())
        return False

    @web.middleware
    async def fault_middleware(self, request: web.Request, handler):
        if request.path not in ("/ws", "/api/ws"):
            slow = self.faults.take("slow")
            if slow is not None:
                await asyncio.sleep(slow.delay)
            if self.faults.take("http-500") is not None:
                return web.Response(status=500, text=SERVER_ERROR_TEXT)
        return await handler(request)

    # --- websocket and messages ------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        self.sockets[sid] = ws  # a reconnect with the same clientId replaces the old socket
        try:
            await ws.send_str(json.dumps({"type": "status", "data": {"status": self.queue_info(), "sid": sid}}))
            run = self.current_run
            if run is not None and run.client_id == sid and run.last_node is not None:
                # Like the real server: a client that reconnects mid-run learns which node is executing.
                await ws.send_str(json.dumps({"type": "executing", "data": {"node": run.last_node}}))
            first_message = True
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                try:
                    data = json.loads(message.data)
                except json.JSONDecodeError:
                    continue
                if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                    self.send("feature_flags", dict(FEATURES), sid)
                first_message = False
        except (ConnectionError, RuntimeError):
            pass
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    def send(self, event: str, data: dict, sid: str | None = None) -> None:
        """Queue a JSON message: to socket `sid`, or to every socket when sid is None (like `send_sync`)."""
        self.messages.put_nowait(("json", json.dumps({"type": event, "data": data}), sid))

    def send_binary(self, data: bytes, sid: str | None) -> None:
        self.messages.put_nowait(("bytes", data, sid))

    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.queue.remaining()}}

    def queue_updated(self) -> None:
        self.send("status", {"status": self.queue_info()})
        self.queue_changed.set()

    async def publish_loop(self) -> None:
        while True:
            kind, payload, sid = await self.messages.get()
            if kind == "close":
                await self.close_sockets(WSCloseCode.GOING_AWAY)
                continue
            targets = list(self.sockets.values()) if sid is None else [self.sockets[sid]] if sid in self.sockets else []
            for ws in targets:
                try:
                    if kind == "json":
                        await ws.send_str(payload)
                    else:
                        await ws.send_bytes(payload)
                except (ConnectionError, RuntimeError):
                    pass  # the socket went away; its handler cleans up

    async def close_sockets(self, code: int) -> None:
        sockets, self.sockets = list(self.sockets.values()), {}
        for ws in sockets:
            try:
                await ws.close(code=code, message=b"server going away")
            except (ConnectionError, RuntimeError):
                pass

    # --- the worker --------------------------------------------------------------------------------------

    async def worker(self) -> None:
        while True:
            item = self.queue.pop()
            if item is None:
                self.queue_changed.clear()
                await self.queue_changed.wait()
                continue
            self.queue_updated()
            self.interrupt_flag = False  # like execute_async: an interrupt aimed at nothing does not leak
            faults = self.draw_prompt_faults()
            record = {
                "prompt_id": item.prompt_id,
                "filename_prefixes": sorted({str(node["inputs"]["filename_prefix"]) for node in item.prompt.values()
                                             if "filename_prefix" in node.get("inputs", {})}),
                "faults": faults.kinds(),
                "ended": None,  # the last execution message, or None when a restart abandoned the prompt
            }
            self.started.append(record)
            run = self.current_run = PromptRun(self.run_environment(), item, faults)
            started = time.monotonic()
            try:
                result = await run.execute()
            finally:
                self.busy.append((started, time.monotonic()))
                self.current_run = None
            record["ended"] = result["status"]["messages"][-1][0]
            self.queue.finish(item, result)
            self.queue_updated()
            if run.client_id is not None:
                self.send("executing", {"node": None, "prompt_id": item.prompt_id}, run.client_id)
            if self.free_memory_requested:
                self.free_memory_requested = False
                self.cache.clear()

    def run_environment(self) -> RunEnvironment:
        return RunEnvironment(
            object_info=self.object_info,
            cache=self.cache,
            input_dir=self.input_dir,
            output_dir=self.output_dir,
            temp_dir=self.temp_dir,
            image_seconds=self.image_seconds,
            video_seconds=self.video_seconds,
            send=self.send,
            send_binary=self.send_binary,
            interrupt_requested=lambda: self.interrupt_flag,
            on_mid_run=self.on_mid_run,
            sampling_permitted=self.take_sampling_permit,
        )

    def take_sampling_permit(self) -> bool:
        """True (and one permit used) when a prompt may start sampling now; always True without a hold."""
        if self.sampling_permits is None:
            return True
        if self.sampling_permits > 0:
            self.sampling_permits -= 1
            return True
        return False

    def draw_prompt_faults(self) -> RunFaults:
        return RunFaults(
            execution_error=self.faults.take("execution-error") is not None,
            drop_ws=self.faults.take("drop-ws") is not None,
            restart=self.faults.take("restart") is not None,
            corrupt_output=self.faults.take("corrupt-output") is not None,
            hostile_filename=self.faults.take("hostile-filename") is not None,
            **{kind.replace("-", "_"): self.faults.take(kind) is not None for kind in CONTENT},
        )

    async def on_mid_run(self, faults: RunFaults) -> None:
        if faults.drop_ws:
            self.messages.put_nowait(("close", None, None))
        if faults.restart:
            # The restart cancels this very task, so it must run in another one; wait here to be cancelled.
            asyncio.get_running_loop().create_task(self.restart())
            await asyncio.Event().wait()

    async def restart(self) -> None:
        """What a server restart looks like from outside: queue, history and cache gone, sockets dropped,
        the running prompt abandoned without a history entry."""
        if self.worker_task is not None:
            self.worker_task.cancel()
            try:
                await self.worker_task
            except asyncio.CancelledError:
                pass
        self.queue = PromptQueue()
        self.number = 0
        self.cache.clear()
        self.interrupt_flag = False
        while not self.messages.empty():
            self.messages.get_nowait()
        await self.close_sockets(WSCloseCode.SERVICE_RESTART)
        self.worker_task = asyncio.create_task(self.worker())

    # --- simple GETs -------------------------------------------------------------------------------------

    async def system_stats(self, request: web.Request) -> web.Response:
        ram_total, ram_free = _memory()
        return web.json_response({
            "system": {
                "os": sys.platform,
                "ram_total": ram_total,
                "ram_free": ram_free,
                "comfyui_version": COMFYUI_VERSION,
                "required_frontend_version": "1.49.6",
                "installed_templates_version": "0.11.44",
                "required_templates_version": "0.11.44",
                "comfy_package_versions": [],
                "python_version": sys.version,
                "pytorch_version": "none (ComfyUI simulator)",
                "embedded_python": False,
                "deploy_environment": "comfy-pipeline-simulator",
                "argv": sys.argv,
            },
            "devices": [{
                "name": "ComfyUI simulator (no GPU)",
                "type": "cpu",
                "index": None,
                "vram_total": ram_total,
                "vram_free": ram_free,
                "torch_vram_total": ram_total,
                "torch_vram_free": ram_free,
            }],
        })

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(FEATURES)

    async def embeddings(self, request: web.Request) -> web.Response:
        return web.json_response([])

    async def model_folders(self, request: web.Request) -> web.Response:
        return web.json_response(MODEL_FOLDERS)

    async def model_files(self, request: web.Request) -> web.Response:
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return web.json_response(self.models.get(folder, []))

    def current_object_info(self) -> dict:
        """The object_info with LoadImage's list showing the images in the input folder, as the real one does."""
        images = sorted(
            entry.name for entry in os.scandir(self.input_dir)
            if entry.is_file() and (mimetypes.guess_type(entry.name)[0] or "").startswith("image/")
        )
        load_image = dict(self.object_info["LoadImage"])
        load_image["input"] = {"required": {"image": [images, {"image_upload": True}]}}
        return {**self.object_info, "LoadImage": load_image}

    async def get_object_info(self, request: web.Request) -> web.Response:
        return web.json_response(self.current_object_info())

    async def get_object_info_class(self, request: web.Request) -> web.Response:
        node_class = request.match_info["node_class"]
        info = self.current_object_info()
        return web.json_response({node_class: info[node_class]} if node_class in info else {})

    # --- prompt, queue, history, interrupt ---------------------------------------------------------------

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        json_data = await request.json()  # malformed or empty body: aiohttp's plain-text 500, like the real server
        if "number" in json_data:
            number = float(json_data["number"])
        else:
            number = self.number
            if "front" in json_data and json_data["front"]:
                number = -number
            self.number += 1

        if "prompt" not in json_data:
            error = {"type": "no_prompt", "message": "No prompt provided", "details": "No prompt provided",
                     "extra_info": {}}
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        client_prompt_id = json_data.get("prompt_id")
        if client_prompt_id is None:
            prompt_id = str(uuid.uuid4())
        elif _is_canonical_uuid(client_prompt_id):
            prompt_id = client_prompt_id
        else:
            error = {
                "type": "invalid_prompt_id",
                "message": "prompt_id must be a valid UUID",
                "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; "
                           "omit it to let the server generate one",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": {}}, status=400)

        outcome = validate_prompt(
            json_data["prompt"],  # not an object: TypeError, a plain-text 500 like the real server
            self.current_object_info(),
            image_exists=self.input_image_exists,
            partial_execution_targets=json_data.get("partial_execution_targets"),
        )
        extra_data = dict(json_data.get("extra_data", {}))
        if "client_id" in json_data:
            extra_data["client_id"] = json_data["client_id"]
        if not outcome.accepted:
            return web.json_response({"error": outcome.error, "node_errors": outcome.node_errors}, status=400)

        for key in SENSITIVE_EXTRA_DATA_KEYS:
            extra_data.pop(key, None)
        extra_data["create_time"] = int(time.time() * 1000)
        self.queue.put(QueueItem(number, prompt_id, outcome.prompt, extra_data, outcome.good_outputs))
        self.queue_updated()
        return web.json_response({"prompt_id": prompt_id, "number": number, "node_errors": outcome.node_errors})

    def input_image_exists(self, name: str) -> bool:
        path = resolve_input_image(self.input_dir, name, self.output_dir, self.temp_dir)
        return path is not None and path.is_file()

    async def get_queue(self, request: web.Request) -> web.Response:
        running = [self.queue.running.as_json()] if self.queue.running is not None else []
        return web.json_response({
            "queue_running": running,
            "queue_pending": [item.as_json() for item in self.queue.pending()],
        })

    async def post_queue(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if "clear" in json_data and json_data["clear"]:
            self.queue.clear_pending()
            self.queue_updated()
        for prompt_id in json_data["delete"] if "delete" in json_data else []:
            if self.queue.delete_pending(prompt_id):
                self.queue_updated()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.rel_url.query.get("max_items")
        offset = request.rel_url.query.get("offset")
        return web.json_response(self.queue.get_history(
            max_items=int(max_items) if max_items is not None else None,
            offset=int(offset) if offset is not None else -1,
        ))

    async def get_history_id(self, request: web.Request) -> web.Response:
        prompt_id = request.match_info["prompt_id"]
        entry = self.queue.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if "clear" in json_data and json_data["clear"]:
            self.queue.history.clear()
        for prompt_id in json_data["delete"] if "delete" in json_data else []:
            self.queue.history.pop(prompt_id, None)
        return web.Response(status=200)

    async def post_interrupt(self, request: web.Request) -> web.Response:
        try:
            json_data = await request.json()
        except json.JSONDecodeError:
            json_data = {}
        prompt_id = json_data.get("prompt_id")
        running = self.queue.running
        if not prompt_id or (running is not None and running.prompt_id == prompt_id):
            self.interrupt_flag = True
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        json_data = await request.json()
        if json_data.get("free_memory", False):
            self.free_memory_requested = True
        return web.Response(status=200)

    # --- files -------------------------------------------------------------------------------------------

    def directory_for(self, folder_type: str | None) -> Path | None:
        return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}.get(folder_type)

    async def upload_image(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        folder_type = post.get("type") or "input"
        upload_dir = self.directory_for(folder_type)
        if upload_dir is None:
            raise ValueError(f"unknown upload type {folder_type!r}")  # the real server fails here too: a 500
        if not (image and image.file):
            return web.Response(status=400)
        filename = image.filename
        if not filename:
            return web.Response(status=400)
        subfolder = post.get("subfolder", "")
        root = os.path.abspath(upload_dir)
        full_folder = os.path.join(root, os.path.normpath(subfolder))
        filepath = os.path.abspath(os.path.join(full_folder, filename))
        if os.path.commonpath((root, filepath)) != root:
            return web.Response(status=400)
        data = image.file.read()
        overwrite = post.get("overwrite")
        is_duplicate = False
        if overwrite not in ("true", "1"):
            stem, extension = os.path.splitext(filename)
            counter = 1
            while os.path.exists(filepath):
                if _sha256_file(filepath) == hashlib.sha256(data).hexdigest():
                    is_duplicate = True  # same name, same bytes: nothing to write
                    break
                filename = f"{stem} ({counter}){extension}"
                filepath = os.path.join(full_folder, filename)
                counter += 1
        if not is_duplicate:
            os.makedirs(os.path.dirname(filepath), exist_ok=True)
            write_atomically(Path(filepath), lambda path: path.write_bytes(data))
        return web.json_response({"name": filename, "subfolder": subfolder, "type": folder_type})

    async def view(self, request: web.Request) -> web.StreamResponse:
        query = request.rel_url.query
        if "filename" not in query:
            return web.Response(status=404)
        filename, output_dir = self._annotated(query["filename"])
        if not filename:
            return web.Response(status=400)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        if output_dir is None:
            output_dir = self.directory_for(query.get("type", "output"))
            if output_dir is None:
                return web.Response(status=400)
        output_dir = os.path.abspath(output_dir)
        if "subfolder" in query:
            full_dir = os.path.join(output_dir, query["subfolder"])
            if os.path.commonpath((os.path.abspath(full_dir), output_dir)) != output_dir:
                return web.Response(status=403)
            output_dir = full_dir
        filename = os.path.basename(filename)
        file = os.path.join(output_dir, filename)
        if not os.path.isfile(file):
            return web.Response(status=404)

        disposition = {"Content-Disposition": f'filename="{filename}"'}
        if "preview" in query:
            image_format, *rest = query["preview"].split(";")
            if image_format not in ("webp", "jpeg") or "a" in query.get("channel", ""):
                image_format = "webp"
            quality = int(rest[-1]) if rest and rest[-1].isdigit() else 90
            with Image.open(file) as picture:
                if image_format == "jpeg" or query.get("channel", "") == "rgb":
                    picture = picture.convert("RGB")
                buffer = BytesIO()
                picture.save(buffer, format=image_format, quality=quality)
            return web.Response(body=buffer.getvalue(), content_type=f"image/{image_format}", headers=disposition)
        channel = query.get("channel", "rgba")
        if channel in ("rgb", "a"):
            with Image.open(file) as picture:
                if channel == "rgb":
                    result = picture.convert("RGB")
                else:
                    alpha = picture.getchannel("A") if picture.mode == "RGBA" else Image.new("L", picture.size, 255)
                    result = Image.new("RGBA", picture.size)
                    result.putalpha(alpha)
                buffer = BytesIO()
                result.save(buffer, format="PNG")
            return web.Response(body=buffer.getvalue(), content_type="image/png", headers=disposition)

        content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        safe_name = filename.replace("\\", "\\\\").replace('"', '\\"')
        headers = {"X-Content-Type-Options": "nosniff", "Content-Disposition": f'filename="{safe_name}"'}
        if content_type in DANGEROUS_CONTENT_TYPES:
            headers.update({"Vary": "Sec-Fetch-Dest", "Cache-Control": "no-store",
                            "Content-Disposition": f'attachment; filename="{safe_name}"'})
            content_type = "application/octet-stream"
        headers["Content-Type"] = content_type
        return web.FileResponse(file, headers=headers)  # streamed from disk, with Etag/Last-Modified/ranges

    def _annotated(self, name: str) -> tuple[str, Path | None]:
        """`folder_paths.annotated_filepath`: "x.png [output]" names its folder."""
        for folder_type in ("output", "input", "temp"):
            suffix = f" [{folder_type}]"
            if name.endswith(suffix):
                return name[: -len(suffix)], self.directory_for(folder_type)
        return name, None


def _is_canonical_uuid(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _memory() -> tuple[int, int]:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_PHYS_PAGES"), page * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0, 0
