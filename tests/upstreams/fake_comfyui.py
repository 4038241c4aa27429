"""Fake ComfyUI server (server.py, execution.py, script_examples/websockets_api_example.py of ComfyUI).

A real HTTP + WebSocket server: POST /prompt validates the API-format graph as validate_prompt does
(unknown class → 400 invalid_prompt; a checkpoint or an input image not in the list → 400
prompt_outputs_failed_validation with node_errors; no output node → prompt_no_outputs) and queues it;
one worker runs one prompt at a time (one GPU) and sends its client's socket, as ComfyUI does:
status, execution_start, execution_cached, executing {node}, progress {value, max, prompt_id, node}
with a binary preview frame per step (>I 1 = PREVIEW_IMAGE, >I 1 = JPEG, then the JPEG), executed,
execution_success, executing {node: null}; the history entry ({prompt, outputs, status}) is written
`history_lag_s` after that. GET /history/{id}, /view, /queue, /object_info/CheckpointLoaderSimple,
/system_stats; POST /upload/image, /queue {delete}, /interrupt. Knobs: `fail_node` (an
execution_error), `drop_ws_after` (close the socket after that many progress messages), `api_key`
(an auth proxy's Bearer check, 401 text).
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web
from PIL import Image

from tests.upstreams.base import FakeServer, FakeState, recording_middleware

OUTPUT_NODES = {"SaveImage", "PreviewImage"}
KNOWN = {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage",
         "PreviewImage", "LoadImage", "LoadImageMask", "VAEEncode", "SetLatentNoiseMask"}


class ComfyState(FakeState):
    def __init__(self) -> None:
        super().__init__()
        self.reset()

    def reset(self) -> None:
        self.clear()
        self.api_key: str | None = None
        self.checkpoints = ["sd_xl_base_1.0.safetensors", "v1-5-pruned-emaonly.safetensors"]
        self.step_s = 0.01
        self.history_lag_s = 0.05
        self.fail_node: str | None = None
        self.drop_ws_after: int | None = None
        self.previews = True
        self.uploads: dict[str, bytes] = {}
        self.files: dict[str, bytes] = {}
        self.history: dict[str, Any] = {}
        self.pending: list[list[Any]] = []
        self.running: list[Any] | None = None
        self.interrupted = False
        self.prompts: list[dict[str, Any]] = []
        self.max_outstanding = 0  # most prompts queued or running at once (one GPU: the gateway's limit)
        self.ws_clients: list[str] = []

    def prompt_bodies(self) -> list[dict[str, Any]]:
        return [r.json for r in self.requests if r.path == "/prompt" and r.method == "POST"]


def _jpeg(shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (shade % 256, 40, 200)).save(buf, "JPEG")
    return buf.getvalue()


def _png(width: int, height: int, shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (max(1, width // 8), max(1, height // 8)), (shade % 256, 120, 60)).save(buf, "PNG")
    return buf.getvalue()


def _node_error(node_id: str, class_type: str, kind: str, message: str, details: str) -> dict[str, Any]:
    return {node_id: {"errors": [{"type": kind, "message": message, "details": details, "extra_info": {}}],
                      "dependent_outputs": [], "class_type": class_type}}


def _needed(prompt: dict[str, Any]) -> list[str]:
    seen: list[str] = []
    todo = [k for k, n in prompt.items() if n["class_type"] in OUTPUT_NODES]
    while todo:
        k = todo.pop()
        if k in seen or k not in prompt:
            continue
        seen.append(k)
        todo += [v[0] for v in (prompt[k].get("inputs") or {}).values() if isinstance(v, list) and len(v) == 2]
    return seen


def validate(prompt: Any, state: ComfyState) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(error, node_errors) as execution.validate_prompt reports them; (None, {}) when valid."""
    if not isinstance(prompt, dict):
        return {"type": "invalid_prompt", "message": "Invalid prompt", "details": "", "extra_info": {}}, {}
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or node.get("class_type") not in KNOWN:
            ct = node.get("class_type") if isinstance(node, dict) else None
            return {"type": "invalid_prompt", "message": f"Cannot execute because node {ct} does not exist.",
                    "details": f"Node ID '#{node_id}'", "extra_info": {}}, {}
    if not any(n["class_type"] in OUTPUT_NODES for n in prompt.values()):
        return {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "", "extra_info": {}}, {}
    errors: dict[str, Any] = {}
    for node_id in _needed(prompt):  # as validate_inputs: only what an output depends on
        node = prompt[node_id]
        inputs = node.get("inputs") or {}
        if node["class_type"] == "CheckpointLoaderSimple" and inputs.get("ckpt_name") not in state.checkpoints:
            errors.update(_node_error(node_id, node["class_type"], "value_not_in_list", "Value not in list",
                                      f"ckpt_name: '{inputs.get('ckpt_name')}' not in {state.checkpoints}"))
        if node["class_type"] in ("LoadImage", "LoadImageMask") and inputs.get("image") not in state.uploads:
            errors.update(_node_error(node_id, node["class_type"], "custom_validation_failed",
                                      "Custom validation failed for node", f"image - Invalid image file: "
                                      f"{inputs.get('image')}"))
    if errors:
        details = "\n".join(f"{e['message']}: {e['details']}" for ne in errors.values() for e in ne["errors"])
        return {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                "details": details, "extra_info": {}}, errors
    return None, {}


def build_app(state: ComfyState) -> web.Application:
    sockets: dict[str, web.WebSocketResponse] = {}
    wake = asyncio.Event()
    counter = [0]

    async def send(client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        ws = sockets.get(client_id or "")
        if ws is not None and not ws.closed:
            await ws.send_str(json.dumps({"type": kind, "data": data}))

    async def send_preview(client_id: str | None, jpeg: bytes) -> None:
        ws = sockets.get(client_id or "")
        if ws is not None and not ws.closed:
            await ws.send_bytes(struct.pack(">I", 1) + struct.pack(">I", 1) + jpeg)

    async def execute(item: list[Any]) -> None:
        number, pid, prompt, extra, outputs = item
        cid = extra.get("client_id")
        messages: list[Any] = [["execution_start", {"prompt_id": pid, "timestamp": int(time.time() * 1000)}]]
        await send(cid, "execution_start", messages[0][1])
        await send(cid, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": 0})
        out: dict[str, Any] = {}
        sent = 0
        latent: dict[str, Any] = next((n["inputs"] for n in prompt.values()
                                       if n["class_type"] == "EmptyLatentImage"), {})
        sampler = next(((k, n["inputs"]) for k, n in prompt.items() if n["class_type"] == "KSampler"), None)
        status = "success"
        for node_id, node in prompt.items():
            await send(cid, "executing", {"node": node_id, "display_node": node_id, "prompt_id": pid})
            if state.fail_node == node_id:
                err = {"prompt_id": pid, "node_id": node_id, "node_type": node["class_type"], "executed": [],
                       "exception_message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                       "exception_type": "torch.OutOfMemoryError", "traceback": ["..."], "current_inputs": {},
                       "current_outputs": {}}
                messages.append(["execution_error", err])
                await send(cid, "execution_error", err)
                status = "error"
                break
            if sampler is not None and node_id == sampler[0]:
                steps = int(sampler[1].get("steps", 20))
                for step in range(1, steps + 1):
                    if state.interrupted:
                        break
                    await asyncio.sleep(state.step_s)
                    await send(cid, "progress", {"value": step, "max": steps, "prompt_id": pid, "node": node_id})
                    if state.previews:
                        await send_preview(cid, _jpeg(step * 12))
                    sent += 1
                    if state.drop_ws_after is not None and sent >= state.drop_ws_after:
                        ws = sockets.pop(cid or "", None)
                        if ws is not None:
                            await ws.close()
                if state.interrupted:
                    mes = {"prompt_id": pid, "node_id": node_id, "node_type": node["class_type"], "executed": []}
                    messages.append(["execution_interrupted", mes])
                    await send(cid, "execution_interrupted", mes)
                    status = "error"
                    break
            if node["class_type"] in OUTPUT_NODES:
                kind = "output" if node["class_type"] == "SaveImage" else "temp"
                images = []
                w, h = int(latent.get("width", 512)), int(latent.get("height", 512))
                for _ in range(int(latent.get("batch_size", 1))):
                    counter[0] += 1
                    name = f"{node['inputs'].get('filename_prefix', 'ComfyUI')}_{counter[0]:05}_.png"
                    state.files[f"{kind}/{name}"] = _png(w, h, counter[0])
                    images.append({"filename": name, "subfolder": "", "type": kind})
                out[node_id] = {"images": images}
                await send(cid, "executed", {"node": node_id, "display_node": node_id, "output": out[node_id],
                                             "prompt_id": pid})
        if status == "success":
            messages.append(["execution_success", {"prompt_id": pid, "timestamp": int(time.time() * 1000)}])
            await send(cid, "execution_success", messages[-1][1])
        await send(cid, "executing", {"node": None, "prompt_id": pid})
        await asyncio.sleep(state.history_lag_s)
        state.history[pid] = {"prompt": item, "outputs": out, "meta": {},
                              "status": {"status_str": status, "completed": status == "success",
                                         "messages": messages}}

    async def worker() -> None:
        while True:
            while not state.pending:
                wake.clear()
                await wake.wait()
            state.pending.sort(key=lambda i: i[0])
            item = state.pending.pop(0)
            state.running, state.interrupted = item, False
            try:
                await execute(item)
            finally:
                state.running = None

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if state.api_key and request.headers.get("Authorization") != f"Bearer {state.api_key}":
            return web.Response(status=401, text="401: Unauthorized")
        resp: web.StreamResponse = await handler(request)
        return resp

    async def post_prompt(request: web.Request) -> web.Response:
        body = request["rec"].json
        if not isinstance(body, dict) or "prompt" not in body:
            return web.json_response({"error": "no prompt", "node_errors": []}, status=400)
        error, node_errors = validate(body["prompt"], state)
        if error is not None:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        pid = str(uuid.uuid4())
        number = len(state.prompts)
        outputs = [k for k, n in body["prompt"].items() if n["class_type"] in OUTPUT_NODES]
        state.prompts.append(body)
        state.pending.append([number, pid, body["prompt"], {"client_id": body.get("client_id")}, outputs])
        state.max_outstanding = max(state.max_outstanding, len(state.pending) + (state.running is not None))
        wake.set()
        return web.json_response({"prompt_id": pid, "number": number, "node_errors": {}})

    async def ws_handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or uuid.uuid4().hex
        sockets[sid] = ws
        state.ws_clients.append(sid)
        try:
            await ws.send_str(json.dumps({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": len(state.pending)}}, "sid": sid}}))
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if sockets.get(sid) is ws:
                sockets.pop(sid, None)
        return ws

    async def history(request: web.Request) -> web.Response:
        pid = request.match_info["pid"]
        return web.json_response({pid: state.history[pid]} if pid in state.history else {})

    async def view(request: web.Request) -> web.Response:
        q = request.query
        key = f"{q.get('type', 'output')}/{q.get('filename', '')}"
        if ".." in q.get("filename", "") or key not in state.files:
            return web.Response(status=404)
        return web.Response(body=state.files[key], content_type="image/png")

    async def upload(request: web.Request) -> web.Response:
        files = request["rec"].files.get("image")
        if not files:
            return web.Response(status=400)
        name, _, data = files[0]
        state.uploads[name] = data
        return web.json_response({"name": name, "subfolder": "", "type": "input"})

    async def get_queue(request: web.Request) -> web.Response:
        return web.json_response({"queue_running": [state.running] if state.running else [],
                                  "queue_pending": state.pending})

    async def post_queue(request: web.Request) -> web.Response:
        body = request["rec"].json or {}
        for pid in body.get("delete") or ():
            state.pending[:] = [i for i in state.pending if i[1] != pid]
        return web.Response(status=200)

    async def interrupt(request: web.Request) -> web.Response:
        state.interrupted = True
        return web.Response(status=200)

    async def object_info(request: web.Request) -> web.Response:
        cls = request.match_info["cls"]
        if cls != "CheckpointLoaderSimple":
            return web.json_response({})
        return web.json_response({cls: {"input": {"required": {"ckpt_name": [state.checkpoints, {}]}},
                                        "output": ["MODEL", "CLIP", "VAE"], "name": cls}})

    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response({"system": {"os": "posix", "comfyui_version": "0.3.40"}, "devices": []})

    async def on_startup(app: web.Application) -> None:
        app["worker"] = asyncio.create_task(worker())

    async def on_cleanup(app: web.Application) -> None:
        app["worker"].cancel()
        for ws in list(sockets.values()):
            await ws.close()

    app = web.Application(middlewares=[recording_middleware(state), auth], client_max_size=64 << 20)
    app.router.add_post("/prompt", post_prompt)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/history/{pid}", history)
    app.router.add_get("/view", view)
    app.router.add_post("/upload/image", upload)
    app.router.add_get("/queue", get_queue)
    app.router.add_post("/queue", post_queue)
    app.router.add_post("/interrupt", interrupt)
    app.router.add_get("/object_info/{cls}", object_info)
    app.router.add_get("/system_stats", system_stats)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def start(state: ComfyState | None = None, port: int = 0) -> FakeServer:
    state = state if state is not None else ComfyState()
    return FakeServer(build_app(state), state, port).start()
