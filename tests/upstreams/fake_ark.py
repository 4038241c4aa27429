"""Fake Volcengine Ark image generation (docs/protocols.md §12, "Volcengine Ark"), under `/api/v3`.

POST /api/v3/images/generations, Bearer key, JSON body:
* Seedream 4.x (`doubao-seedream-4-0-250828`, `doubao-seedream-4-5-251128`): `size` 1K/2K/4K (4.5: 2K/4K)
  or WxH within the model's total pixels and a ratio within [1/16, 16]; `image` (URL / data URL, one
  or a list) as references; `sequential_image_generation` auto + `sequential_image_generation_options.
  max_images` for a set; `stream: true` → SSE (`event: image_generation.partial_succeeded` per image,
  `partial_failed`, `image_generation.completed` with usage, then `data: [DONE]`), `stream_gap_s` apart;
  with `pretty_stream` the JSON is pretty-printed over several lines, as the reference shows it.
* Seedream 3.0 t2i: WxH, each side 512-2048; no `image`. SeedEdit 3.0: `image` (one) required, size
  `adaptive`. Both take `seed` and `guidance_scale` (1-10).
Answer `{model, created, data: [{url | b64_json, size}], usage}`; URLs are served under /files/ (jpeg).
Errors `{error: {code, message, param, type}}`: AuthenticationError 401, InvalidParameter 400 (a
validation failure is JSON even for `stream: true`), InputTextSensitiveContentDetected 400 (prompt with
`moderation_word`), `mode`: "overdue" 403 AccountOverdueError, "rate" 429 RateLimitExceeded.
EndpointRPMExceeded, "server" 500 InternalServiceError, "output_filtered" (the set's second image fails
with OutputImageSensitiveContentDetected).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import time
import uuid
from typing import Any

from aiohttp import web
from PIL import Image

from .base import FakeServer, FakeState, recording_middleware
from .pictures import digest_color

MODELS = {"doubao-seedream-4-0-250828": "4.0", "doubao-seedream-4-5-251128": "4.5",
          "doubao-seedream-3-0-t2i-250415": "3.0", "doubao-seededit-3-0-i2i-250628": "edit"}
TIER_SIZE = {"1K": (1024, 1024), "2K": (2048, 2048), "4K": (4096, 4096)}
PIXELS = {"4.0": (1280 * 720, 4096 * 4096), "4.5": (2560 * 1440, 4096 * 4096)}
SIZE_RE = re.compile(r"^(\d+)x(\d+)$")


class ArkState(FakeState):
    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "ok"
        self.moderation_word = "forbidden"
        self.pretty_stream = False
        self.files: dict[str, bytes] = {}

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.files.clear()
        self.mode = "ok"
        self.pretty_stream = False
        self.delay_s = 0.0


def jpeg(color: tuple[int, int, int], w: int, h: int) -> bytes:
    scale = 64 / max(w, h)  # the served file keeps the shape but stays tiny
    buf = io.BytesIO()
    Image.new("RGB", (max(1, round(w * scale)), max(1, round(h * scale))), color).save(buf, "JPEG")
    return buf.getvalue()


def _error(status: int, code: str, message: str, type_: str = "BadRequest", param: str = "") -> web.Response:
    rid = uuid.uuid4().hex[:20]
    return web.json_response({"error": {"code": code, "message": f"{message} Request id: {rid}", "param": param,
                                        "type": type_}}, status=status)


def _size(body: dict[str, Any], fam: str) -> tuple[int, int] | str:
    """(w, h), or an error message."""
    size = body.get("size")
    if fam == "edit":
        return (1024, 1024) if size in (None, "adaptive") else "size must be adaptive for this model"
    if fam == "3.0":
        m = SIZE_RE.match(str(size or "1024x1024"))
        if not m or not all(512 <= int(v) <= 2048 for v in m.groups()):
            return "size must be WxH with each side in [512, 2048]"
        return int(m.group(1)), int(m.group(2))
    size = size or "2K"
    if size in TIER_SIZE:
        if fam == "4.5" and size == "1K":
            return "size 1K is not supported by this model"
        return TIER_SIZE[size]
    m = SIZE_RE.match(str(size))
    if not m:
        return "size must be 1K, 2K, 4K or WxH"
    w, h = int(m.group(1)), int(m.group(2))
    lo, hi = PIXELS[fam]
    if not lo <= w * h <= hi or not 1 / 16 <= w / h <= 16:
        return f"size {size}: total pixels must be in [{lo}, {hi}] and the ratio in [1/16, 16]"
    return w, h


def build_app(state: ArkState) -> web.Application:
    async def generate(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not token or token in state.bad_keys or (state.api_key is not None and token != state.api_key):
            return _error(401, "AuthenticationError", "The API key or AK/SK in the request is missing or invalid.",
                          "Unauthorized")
        body = request["rec"].json
        if not isinstance(body, dict):
            return _error(400, "InvalidParameter", "The request body is not valid JSON.")
        fam = MODELS.get(str(body.get("model")))
        if fam is None:
            return _error(404, "InvalidEndpointOrModel.NotFound",
                          f"The model or endpoint {body.get('model')} does not exist or you do not have access to it.",
                          "NotFound")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return _error(400, "MissingParameter", "The request failed because it is missing a required parameter: "
                          "prompt", param="prompt")
        size = _size(body, fam)
        if isinstance(size, str):
            return _error(400, "InvalidParameter", f"A parameter specified in the request is not valid: {size}.",
                          param="size")
        image = body.get("image")
        refs = image if isinstance(image, list) else [image] if image is not None else []
        if fam == "edit" and len(refs) != 1:
            return _error(400, "MissingParameter", "The request failed because it is missing a required "
                          "parameter: image", param="image")
        if fam == "3.0" and refs:
            return _error(400, "InvalidParameter", "image is not supported by this model.", param="image")
        for r in refs:
            if not isinstance(r, str) or not (r.startswith(("http://", "https://")) or
                                              re.match(r"^data:image/[a-z]+;base64,", r)):
                return _error(400, "InvalidParameter.UnsupportedImageFormat", "The image format is not supported.",
                              param="image")
        if "guidance_scale" in body and fam in ("3.0", "edit") and not 1 <= float(body["guidance_scale"]) <= 10:
            return _error(400, "InvalidParameter", "guidance_scale must be in [1, 10].", param="guidance_scale")
        if not isinstance(body.get("watermark", True), bool):
            return _error(400, "InvalidParameter", "watermark must be a boolean.", param="watermark")
        count = 1
        if fam in ("4.0", "4.5") and body.get("sequential_image_generation") == "auto":
            opts = body.get("sequential_image_generation_options") or {}
            count = int(opts.get("max_images", 15))
            if not 1 <= count <= 15 or count + len(refs) > 15:
                return _error(400, "InvalidParameter", "max_images out of range.",
                              param="sequential_image_generation_options.max_images")
        if body.get("stream") and fam not in ("4.0", "4.5"):
            return _error(400, "InvalidParameter.UnsupportedModel", "The request failed because the selected model "
                          "does not support the stream mode.")
        if state.moderation_word in prompt.lower():
            return _error(400, "InputTextSensitiveContentDetected", "The request failed because the input text may "
                          "contain sensitive information.")
        if state.mode == "overdue":
            return _error(403, "AccountOverdueError", "The request failed because your account has an overdue "
                          "balance.", "Forbidden")
        if state.mode == "rate":
            r = _error(429, "RateLimitExceeded.EndpointRPMExceeded", "The Requests Per Minute (RPM) limit of the "
                       "associated endpoint for your account has been exceeded.", "TooManyRequests")
            r.headers["Retry-After"] = "3"
            return r
        if state.mode == "server":
            return _error(500, "InternalServiceError", "The service encountered an unexpected internal error.",
                          "InternalServerError")
        w, h = size
        items = []
        for i in range(count):
            if state.mode == "output_filtered" and i == 1:
                items.append({"error": {"code": "OutputImageSensitiveContentDetected",
                                        "message": "The request failed because the output image may contain "
                                                   "sensitive information."}})
                continue
            raw = jpeg(digest_color(prompt, i), w, h)
            item: dict[str, Any] = {"size": f"{w}x{h}"}
            if body.get("response_format") == "b64_json":
                item["b64_json"] = base64.b64encode(raw).decode()
            else:
                fid = uuid.uuid4().hex
                state.files[fid] = raw
                item["url"] = f"http://{request.host}/files/{fid}.jpeg?X-Tos-Expires=86400"
            items.append(item)
        made = sum(1 for it in items if "error" not in it)
        usage = {"generated_images": made, "output_tokens": 16384 * made, "total_tokens": 16384 * made}
        if not body.get("stream"):
            return web.json_response({"model": body["model"], "created": int(time.time()), "data": items,
                                      "usage": usage})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for i, it in enumerate(items):
            await asyncio.sleep(state.stream_gap_s)
            kind = "image_generation.partial_failed" if "error" in it else "image_generation.partial_succeeded"
            await resp.write(_sse(kind, {"type": kind, "model": body["model"], "created": int(time.time()),
                                         "image_index": i, **it}, state.pretty_stream))
        done = "image_generation.completed"
        await resp.write(_sse(done, {"type": done, "model": body["model"], "created": int(time.time()),
                                     "usage": usage}, state.pretty_stream))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def file(request: web.Request) -> web.StreamResponse:
        raw = state.files.get(request.match_info["fid"])
        if raw is None:
            return web.Response(status=404, text="NoSuchKey")
        return web.Response(body=raw, content_type="image/jpeg")

    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=12 << 20)
    app.router.add_post("/api/v3/images/generations", generate)
    app.router.add_get("/files/{fid}.jpeg", file)
    return app


def _sse(kind: str, data: dict[str, Any], pretty: bool) -> bytes:
    text = json.dumps(data, indent=2) if pretty else json.dumps(data)
    return f"event: {kind}\ndata: {text}\n\n".encode()


def start(state: ArkState | None = None, port: int = 0) -> FakeServer:
    state = state if state is not None else ArkState()
    return FakeServer(build_app(state), state, port).start()
