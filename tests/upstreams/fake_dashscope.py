"""Fake Alibaba DashScope image APIs (docs/protocols.md §13, "Alibaba DashScope"), Bearer key:

* POST /api/v1/services/aigc/multimodal-generation/generation (Qwen-Image, synchronous):
  `{model, input: {messages: [{role: user, content: [{image}..., {text}]}]}, parameters: {size "W*H",
  negative_prompt, prompt_extend, watermark, seed}}` → `{output: {choices: [{finish_reason, message:
  {role, content: [{image: url}]}}]}, usage: {width, height, image_count}, request_id}`. qwen-image(-plus)
  take only the five documented sizes and n = 1; qwen-image-edit needs one image.
* POST /api/v1/services/aigc/text2image/image-synthesis (Wan, asynchronous; `X-DashScope-Async: enable`
  required): `{model, input: {prompt, negative_prompt}, parameters: {size, n 1-4, seed, ...}}` →
  `{output: {task_id, task_status: PENDING}, request_id}`; GET /api/v1/tasks/{id} answers PENDING for the
  first `pending_polls` queries, RUNNING for the next `running_polls`, then SUCCEEDED with `results`
  `[{orig_prompt, actual_prompt, url}]`, `task_metrics` and `usage.image_count` (or FAILED with
  `code`/`message` for a prompt containing `fail_word`); an unknown id is UNKNOWN.
  POST /api/v1/tasks/{id}/cancel cancels a PENDING task.
* Errors `{request_id, code, message}`: InvalidApiKey 401, InvalidParameter 400, DataInspectionFailed
  400 (prompt containing `moderation_word`); `mode`: "arrearage" 400 Arrearage, "throttle" 429
  Throttling.RateQuota, "server" 500 InternalError.
Result images are real PNGs (one colour, at most 64 px) under /files/.
"""

from __future__ import annotations

import io
import re
import uuid
from typing import Any

from aiohttp import web
from PIL import Image

from .base import FakeServer, FakeState, recording_middleware
from .pictures import digest_color

SYNC = "/api/v1/services/aigc/multimodal-generation/generation"
ASYNC = "/api/v1/services/aigc/text2image/image-synthesis"
QWEN_SIZES = {"1664*928", "1472*1140", "1328*1328", "1140*1472", "928*1664"}
QWEN = {"qwen-image", "qwen-image-plus", "qwen-image-edit"}
WAN = {"wan2.2-t2i-flash", "wan2.2-t2i-plus", "wanx2.1-t2i-turbo", "wanx2.1-t2i-plus"}
SIZE_RE = re.compile(r"^(\d+)\*(\d+)$")


class DashScopeState(FakeState):
    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "ok"
        self.moderation_word = "forbidden"
        self.fail_word = "doomed"
        self.pending_polls = 1
        self.running_polls = 1
        self.files: dict[str, bytes] = {}
        self.tasks: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.files.clear()
            self.tasks.clear()
        self.mode = "ok"
        self.pending_polls = 1
        self.running_polls = 1
        self.delay_s = 0.0


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"request_id": str(uuid.uuid4()), "code": code, "message": message}, status=status)


def build_app(state: DashScopeState) -> web.Application:
    def host(request: web.Request, prompt: str, i: int, w: int, h: int) -> str:
        scale = 64 / max(w, h)
        buf = io.BytesIO()
        Image.new("RGB", (max(1, round(w * scale)), max(1, round(h * scale))), digest_color(prompt, i)).save(buf, "PNG")
        fid = uuid.uuid4().hex
        state.files[fid] = buf.getvalue()
        return f"http://{request.host}/files/{fid}.png?Expires=86400"

    def refused(request: web.Request, body: Any, models: set[str]) -> web.Response | None:
        """The checks both endpoints make, in DashScope's order."""
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not token or token in state.bad_keys or (state.api_key is not None and token != state.api_key):
            return _error(401, "InvalidApiKey", "Invalid API-key provided.")
        if not isinstance(body, dict) or body.get("model") not in models:
            return _error(400, "InvalidParameter", f"Model not exist or not supported: {body.get('model')}"
                          if isinstance(body, dict) else "The request body is not JSON.")
        if state.mode == "arrearage":
            return _error(400, "Arrearage", "Access denied, please make sure your account is in good standing.")
        if state.mode == "throttle":
            return _error(429, "Throttling.RateQuota", "Requests rate limit exceeded, please try again later.")
        if state.mode == "server":
            return _error(500, "InternalError", "An internal error has occured, please try again later.")
        return None

    def size_of(params: dict[str, Any], model: str) -> tuple[int, int] | str:
        size = params.get("size")
        if model in ("qwen-image", "qwen-image-plus"):
            size = size or "1328*1328"
            if size not in QWEN_SIZES:
                return f"size must be one of {', '.join(sorted(QWEN_SIZES))}"
        size = size or "1024*1024"
        m = SIZE_RE.match(str(size))
        if not m:
            return "size must look like 1024*1024"
        w, h = int(m.group(1)), int(m.group(2))
        lo, hi = (512, 2048) if model in QWEN else (512, 1440)
        if not (lo <= w <= hi and lo <= h <= hi):
            return f"size: each side must be in [{lo}, {hi}]"
        return w, h

    async def sync(request: web.Request) -> web.StreamResponse:
        body = request["rec"].json
        no = refused(request, body, QWEN)
        if no is not None:
            return no
        params = body.get("parameters") or {}
        messages = (body.get("input") or {}).get("messages")
        content = messages[0].get("content") if isinstance(messages, list) and messages else None
        if not isinstance(content, list):
            return _error(400, "InvalidParameter", "input.messages is required.")
        texts = [c["text"] for c in content if isinstance(c, dict) and isinstance(c.get("text"), str)]
        images = [c["image"] for c in content if isinstance(c, dict) and "image" in c]
        if len(texts) != 1:
            return _error(400, "InvalidParameter", "The content must hold one text.")
        if body["model"] == "qwen-image-edit" and len(images) != 1:
            return _error(400, "InvalidParameter", "qwen-image-edit takes exactly one image.")
        if body["model"] != "qwen-image-edit" and images:
            return _error(400, "InvalidParameter", "This model takes no image.")
        if params.get("n", 1) != 1:
            return _error(400, "InvalidParameter", "n must be 1 for this model.")
        size = size_of(params, body["model"])
        if isinstance(size, str):
            return _error(400, "InvalidParameter", size)
        if state.moderation_word in texts[0].lower():
            return _error(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
        w, h = size
        url = host(request, texts[0], 0, w, h)
        return web.json_response({
            "output": {"choices": [{"finish_reason": "stop",
                                    "message": {"role": "assistant", "content": [{"image": url}]}}],
                       "task_metric": {"TOTAL": 1, "SUCCEEDED": 1, "FAILED": 0}},
            "usage": {"width": w, "height": h, "image_count": 1}, "request_id": str(uuid.uuid4())})

    async def submit(request: web.Request) -> web.StreamResponse:
        body = request["rec"].json
        no = refused(request, body, WAN)
        if no is not None:
            return no
        if request.headers.get("X-DashScope-Async") != "enable":
            return _error(403, "AccessDenied", "current user api does not support synchronous calls")
        params = body.get("parameters") or {}
        prompt = (body.get("input") or {}).get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _error(400, "InvalidParameter", "input.prompt is required.")
        n = params.get("n", 4)
        if not isinstance(n, int) or not 1 <= n <= 4:
            return _error(400, "InvalidParameter", "n must be in [1, 4].")
        size = size_of(params, body["model"])
        if isinstance(size, str):
            return _error(400, "InvalidParameter", size)
        if state.moderation_word in prompt.lower():
            return _error(400, "DataInspectionFailed", "Input data may contain inappropriate content.")
        tid = str(uuid.uuid4())
        state.tasks[tid] = {"prompt": prompt, "n": n, "size": size, "polls": 0, "status": "PENDING"}
        return web.json_response({"output": {"task_status": "PENDING", "task_id": tid},
                                  "request_id": str(uuid.uuid4())})

    async def task(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if state.api_key is not None and auth != f"Bearer {state.api_key}":
            return _error(401, "InvalidApiKey", "Invalid API-key provided.")
        tid = request.match_info["tid"]
        t = state.tasks.get(tid)
        rid = str(uuid.uuid4())
        if t is None:
            return web.json_response({"request_id": rid, "output": {"task_id": tid, "task_status": "UNKNOWN"}})
        out: dict[str, Any] = {"task_id": tid, "submit_time": "2025-09-01 10:00:00.000"}
        if t["status"] in ("PENDING", "RUNNING"):
            t["polls"] += 1
            if t["polls"] > state.pending_polls + state.running_polls:
                t["status"] = "FAILED" if state.fail_word in t["prompt"] else "SUCCEEDED"
                w, h = t["size"]
                t["results"] = [{"orig_prompt": t["prompt"], "actual_prompt": t["prompt"] + ", detailed",
                                 "url": host(request, t["prompt"], i, w, h)} for i in range(t["n"])]
            elif t["polls"] > state.pending_polls:
                t["status"] = "RUNNING"
        out["task_status"] = t["status"]
        if t["status"] == "SUCCEEDED":
            out.update(results=t["results"], end_time="2025-09-01 10:00:09.000",
                       task_metrics={"TOTAL": t["n"], "SUCCEEDED": t["n"], "FAILED": 0})
            return web.json_response({"request_id": rid, "output": out, "usage": {"image_count": t["n"]}})
        if t["status"] == "FAILED":
            out.update(code="InternalError.Algo", message="The model could not generate an image for this input.")
        return web.json_response({"request_id": rid, "output": out})

    async def cancel(request: web.Request) -> web.StreamResponse:
        t = state.tasks.get(request.match_info["tid"])
        if t is None or t["status"] != "PENDING":
            return _error(400, "UnsupportedOperation", "Failed to cancel the task, please confirm if the task is in "
                          "PENDING status.")
        t["status"] = "CANCELED"
        return web.json_response({"request_id": str(uuid.uuid4())})

    async def file(request: web.Request) -> web.StreamResponse:
        raw = state.files.get(request.match_info["fid"])
        if raw is None:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=raw, content_type="image/png")

    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=12 << 20)
    app.router.add_post(SYNC, sync)
    app.router.add_post(ASYNC, submit)
    app.router.add_get("/api/v1/tasks/{tid}", task)
    app.router.add_post("/api/v1/tasks/{tid}/cancel", cancel)
    app.router.add_get("/files/{fid}.png", file)
    return app


def start(state: DashScopeState | None = None, port: int = 0) -> FakeServer:
    state = state if state is not None else DashScopeState()
    return FakeServer(build_app(state), state, port).start()
