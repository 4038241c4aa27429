"""Fake Automatic1111 web UI API (modules/api/api.py, modules/api/models.py of stable-diffusion-webui).

* POST /sdapi/v1/txt2img, /sdapi/v1/img2img → {images: [base64 PNG], parameters, info: "<JSON string>"}.
  With batch_size > 1 and `return_grid` on (the web UI's default) the grid comes first and
  info.index_of_first_image is 1. One job at a time (the web UI's queue_lock); `steps` ticks of
  `step_s` each, reported by GET /sdapi/v1/progress {progress, eta_relative, state, current_image,
  textinfo} with a live preview (base64 PNG) while it runs.
* Errors as the web UI answers them: a body FastAPI refuses → 422 {detail: [{loc, msg, type}]};
  an unknown sampler → 404 and an HTTPException body {error, detail, body, errors}; --api-auth
  (`state.auth = "user:pass"`) → 401 {error: "HTTPException", detail: "Not authenticated" | "Incorrect
  username or password", ...} with WWW-Authenticate: Basic; injected faults (e.g. the 500
  {error: "OutOfMemoryError", ...} of a CUDA OOM) through FakeState.fail_next.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
from typing import Any

from aiohttp import web
from PIL import Image

from tests.upstreams.base import FakeServer, FakeState, recording_middleware

SAMPLERS = ("Euler a", "Euler", "DPM++ 2M", "DDIM")
CHECKPOINTS = ("v1-5-pruned-emaonly.safetensors [6ce0161689]", "sd_xl_base_1.0.safetensors [31e35c80fc]")


class A1111State(FakeState):
    def __init__(self) -> None:
        super().__init__()
        self.auth: str | None = None
        self.step_s = 0.02
        self.return_grid = True
        self.progress: dict[str, Any] = _idle()
        self.progress_polls = 0
        self.loaded = CHECKPOINTS[0]

    def reset(self) -> None:
        self.clear()
        self.auth = None
        self.step_s = 0.02
        self.return_grid = True
        self.progress = _idle()
        self.progress_polls = 0

    def bodies(self, path: str = "/sdapi/v1/txt2img") -> list[dict[str, Any]]:
        return [r.json for r in self.requests if r.path == path]


def _idle() -> dict[str, Any]:
    return {"progress": 0.0, "eta_relative": 0.0, "state": {"job_count": 0, "sampling_step": 0, "sampling_steps": 0},
            "current_image": None, "textinfo": None}


def _http_exception(status: int, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """api_middleware's handle_exception for an HTTPException."""
    body = {"error": "HTTPException", "detail": detail, "body": "", "errors": f"{status}: {detail}"}
    return web.json_response(body, status=status, headers=headers)


def png(width: int, height: int, shade: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (max(1, width // 8), max(1, height // 8)), (shade % 256, 90, 160)).save(buf, "PNG")
    return buf.getvalue()


def _validate(body: Any, img2img: bool) -> list[dict[str, Any]]:
    """FastAPI/pydantic's 422 detail for the fields the gateway sends."""
    errors = []
    if not isinstance(body, dict):
        return [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]
    for k in ("width", "height", "steps", "batch_size", "n_iter", "seed"):
        if k in body and not isinstance(body[k], int):
            errors.append({"loc": ["body", k], "msg": "value is not a valid integer", "type": "type_error.integer"})
    if "cfg_scale" in body and not isinstance(body["cfg_scale"], int | float):
        errors.append({"loc": ["body", "cfg_scale"], "msg": "value is not a valid float", "type": "type_error.float"})
    if img2img and not isinstance(body.get("init_images"), list):
        errors.append({"loc": ["body", "init_images"], "msg": "field required", "type": "value_error.missing"})
    return errors


def build_app(state: A1111State) -> web.Application:
    queue_lock = asyncio.Lock()

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if state.auth:
            header = request.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return _http_exception(401, "Not authenticated", {"WWW-Authenticate": "Basic"})
            try:
                given = base64.b64decode(header[6:]).decode()
            except (binascii.Error, UnicodeDecodeError):
                given = ""
            if given != state.auth:
                return _http_exception(401, "Incorrect username or password", {"WWW-Authenticate": "Basic"})
        resp: web.StreamResponse = await handler(request)
        return resp

    async def generate(request: web.Request, img2img: bool) -> web.Response:
        body = request["rec"].json
        errors = _validate(body, img2img)
        if errors:
            return web.json_response({"detail": errors}, status=422)
        sampler = body.get("sampler_name") or "Euler a"
        if sampler not in SAMPLERS:
            return _http_exception(404, "Sampler not found")
        if img2img:
            try:
                for b64 in body["init_images"]:
                    Image.open(io.BytesIO(base64.b64decode(b64))).load()
            except (binascii.Error, OSError, ValueError):
                return _http_exception(500, "Invalid encoded image")
        width, height = int(body.get("width", 512)), int(body.get("height", 512))
        steps, n = int(body.get("steps", 20)), int(body.get("batch_size", 1))
        seed = body.get("seed", -1)
        seed = 1234567 if seed in (-1, None) else seed
        checkpoint = (body.get("override_settings") or {}).get("sd_model_checkpoint") or state.loaded
        async with queue_lock:
            start = time.time()
            for step in range(steps):
                state.progress = {"progress": round((step + 0.01) / steps, 3),
                                  "eta_relative": round((steps - step) * state.step_s, 3),
                                  "state": {"job_count": 1, "sampling_step": step, "sampling_steps": steps,
                                            "job_timestamp": str(int(start))},
                                  "current_image": base64.b64encode(png(64, 64, step * 10)).decode() if step else None,
                                  "textinfo": None}
                await asyncio.sleep(state.step_s)
            state.progress = _idle()
        images = [base64.b64encode(png(width, height, seed + i)).decode() for i in range(n)]
        first = 0
        if n > 1 and state.return_grid:
            images.insert(0, base64.b64encode(png(width * 2, height * 2, 0)).decode())
            first = 1
        info = {"prompt": body.get("prompt"), "seed": seed, "all_seeds": [seed + i for i in range(n)], "width": width,
                "height": height, "sampler_name": sampler, "sd_model_name": checkpoint.split(".")[0],
                "index_of_first_image": first, "infotexts": ["..."] * len(images)}
        params = {k: v for k, v in body.items() if k not in ("init_images", "mask")}
        return web.json_response({"images": images, "parameters": params, "info": json.dumps(info)})

    async def txt2img(request: web.Request) -> web.Response:
        return await generate(request, False)

    async def img2img(request: web.Request) -> web.Response:
        return await generate(request, True)

    async def progress(request: web.Request) -> web.Response:
        state.progress_polls += 1
        out = dict(state.progress)
        if request.query.get("skip_current_image") == "true":
            out["current_image"] = None
        return web.json_response(out)

    async def interrupt(request: web.Request) -> web.Response:
        return web.json_response({})

    async def sd_models(request: web.Request) -> web.Response:
        return web.json_response([{"title": c, "model_name": c.split(".")[0]} for c in CHECKPOINTS])

    app = web.Application(middlewares=[recording_middleware(state), auth], client_max_size=64 << 20)
    app.router.add_post("/sdapi/v1/txt2img", txt2img)
    app.router.add_post("/sdapi/v1/img2img", img2img)
    app.router.add_get("/sdapi/v1/progress", progress)
    app.router.add_post("/sdapi/v1/interrupt", interrupt)
    app.router.add_get("/sdapi/v1/sd-models", sd_models)
    return app


def start(state: A1111State | None = None, port: int = 0) -> FakeServer:
    state = state if state is not None else A1111State()
    return FakeServer(build_app(state), state, port).start()
