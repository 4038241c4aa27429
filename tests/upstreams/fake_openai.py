"""Fake OpenAI Images API upstream: a real aiohttp server on 127.0.0.1 (protocols.md §1).

Routes: POST /v1/images/generations (JSON), POST /v1/images/edits (multipart or JSON `images`),
POST /v1/images/variations (multipart), GET /v1/models[/{id}], and GET /files/{name} serving the images
of `url` answers (no auth, like OpenAI's blob URLs). Every request is recorded by base.py; the handlers
also put what they derived into `Recorded.extra` (kind, model, n, image_count, has_mask, ...).

Images are real (tiny) PNG/JPEG/WebP files, a solid colour derived from a hash of prompt + index, sized
like the requested `WxH` but with each side capped at MAX_SIDE.

Run by hand: python -m tests.upstreams.fake_openai --port 8101
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import io
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from PIL import Image

from .base import FakeServer, FakeState, Fault, Recorded, recording_middleware, serve_forever

MAX_SIDE = 256  # generated images never exceed this on either side (keeps the fake fast)
DEFAULT_SIDE = 1024  # what "auto" / no size means upstream
IMAGES_PATH = "/v1/images"  # default `match` of the fault helpers: image calls only, not /files or /models

MODELS = [
    "dall-e-2",
    "dall-e-3",
    "gpt-image-1",
    "gpt-image-1-mini",
    "gpt-image-1.5",
    "gpt-image-2",
    "chatgpt-image-latest",
]
_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}  # per 1024x1024 image
_SIZE_RE = re.compile(r"^(\d{1,5})x(\d{1,5})$")
_INDEXED_IMAGE_RE = re.compile(r"^image\[\d*\]$")

FILES: web.AppKey[dict[str, tuple[bytes, str]]] = web.AppKey("fake_openai_files", dict)

MISSING_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if "
    "you're accessing the API from your browser and are prompted for a username. You can obtain an API key "
    "from https://platform.openai.com/account/api-keys."
)
BAD_KEY_MESSAGE = (
    "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
)
RATE_LIMIT_MESSAGE = (
    "Rate limit reached for gpt-image-1 in organization org-fake on images per min (IPM): Limit 5, Used 5, "
    "Requested 1. Please try again in 12s. "
    "Visit https://platform.openai.com/account/rate-limits to learn more."
)
SERVER_ERROR_MESSAGE = "The server had an error while processing your request. Sorry about that!"
MODERATION_MESSAGE = (
    "Your request was rejected as a result of our safety system. Your request may contain content that is "
    "not allowed by our safety system."
)


# --------------------------------------------------------------------------- error bodies and fault helpers


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error envelope: all four keys always present (protocols.md §1.6)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def rate_limited(retry_after: str | None = "3", match: str = IMAGES_PATH) -> Fault:
    """429 rate_limit_exceeded, with a Retry-After header (seconds) unless retry_after is None."""
    headers = {"x-ratelimit-limit-requests": "5", "x-ratelimit-remaining-requests": "0"}
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    body = error_body(RATE_LIMIT_MESSAGE, "requests", None, "rate_limit_exceeded")
    return Fault(status=429, body=body, headers=headers, match=match)


def insufficient_quota(match: str = IMAGES_PATH) -> Fault:
    """429 that must not be retried: the account is out of credit."""
    message = (
        "You exceeded your current quota, please check your plan and billing details. For more information "
        "on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors."
    )
    return Fault(
        status=429, body=error_body(message, "insufficient_quota", None, "insufficient_quota"), match=match
    )


def server_error(match: str = IMAGES_PATH) -> Fault:
    """500 server_error, the body OpenAI sends."""
    return Fault(status=500, body=error_body(SERVER_ERROR_MESSAGE, "server_error"), match=match)


def overloaded(match: str = IMAGES_PATH) -> Fault:
    """503 'engine overloaded'."""
    message = "The engine is currently overloaded, please try again later"
    return Fault(status=503, body=error_body(message, "server_error", None, None), match=match)


def moderation_blocked(match: str = IMAGES_PATH) -> Fault:
    """400 moderation_blocked (GPT-image safety system); must not be retried."""
    body = error_body(MODERATION_MESSAGE, "image_generation_user_error", None, "moderation_blocked")
    return Fault(status=400, body=body, match=match)


def invalid_key(match: str = IMAGES_PATH) -> Fault:
    """401 invalid_api_key, whatever key was sent."""
    body = error_body(BAD_KEY_MESSAGE, "invalid_request_error", None, "invalid_api_key")
    return Fault(status=401, body=body, match=match)


def slow(seconds: float, match: str = IMAGES_PATH) -> Fault:
    """Wait `seconds`, then answer normally (one request). For every request use `state.delay_s`."""
    return Fault(delay_s=seconds, passthrough=True, match=match)


def dropped(match: str = IMAGES_PATH, after_s: float = 0.0) -> Fault:
    """Close the connection without any answer."""
    return Fault(drop=True, delay_s=after_s, match=match)


def last_request(state: FakeState, path_part: str = IMAGES_PATH) -> Recorded:
    """The latest recorded request whose path contains `path_part` (skips /files downloads, /v1/models)."""
    with state.lock:
        for rec in reversed(state.requests):
            if path_part in rec.path:
                return rec
    raise LookupError(f"no request to {path_part!r} recorded; got {state.paths()}")


# --------------------------------------------------------------------------- images


def make_image(
    seed: str, width: int, height: int, fmt: str = "png", transparent: bool = False, compression: int = 100
) -> bytes:
    """A solid-colour image whose colour is a hash of `seed`. Pixel (0, 0) identifies the image."""
    digest = hashlib.sha256(seed.encode()).digest()
    rgb = (digest[0], digest[1], digest[2])
    buf = io.BytesIO()
    if transparent and fmt != "jpeg":
        Image.new("RGBA", (width, height), (*rgb, 128)).save(buf, _PIL_FORMATS[fmt])
    elif fmt == "png":
        Image.new("RGB", (width, height), rgb).save(buf, "PNG")
    else:
        Image.new("RGB", (width, height), rgb).save(
            buf, _PIL_FORMATS[fmt], quality=max(1, min(95, compression))
        )
    return buf.getvalue()


# --------------------------------------------------------------------------- request parsing


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type_, param, code)


def _param(rec: Recorded, name: str) -> Any:
    """A request parameter from the JSON body or from the multipart form (last value; "" means absent)."""
    if isinstance(rec.json, dict):
        return rec.json.get(name)
    values = rec.form.get(name)
    if not values or values[-1] == "":
        return None
    return values[-1]


def _int(rec: Recorded, name: str, default: int, lo: int, hi: int) -> int:
    value = _param(rec, name)
    if value is None:
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ApiError(
            400,
            f"Invalid type for '{name}': expected an integer, but got {value!r} instead.",
            param=name,
            code="invalid_type",
        ) from None
    if not lo <= number <= hi:
        raise ApiError(
            400,
            f"Invalid '{name}': integer {number} out of range [{lo}, {hi}].",
            param=name,
            code="integer_out_of_range",
        )
    return number


def _bool(rec: Recorded, name: str) -> bool:
    value = _param(rec, name)
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def _choice(rec: Recorded, name: str, allowed: tuple[str, ...], default: str | None) -> str | None:
    value = _param(rec, name)
    if value is None:
        return default
    if value not in allowed:
        raise ApiError(
            400,
            f"Invalid value: '{value}'. Supported values are: " + ", ".join(f"'{a}'" for a in allowed) + ".",
            param=name,
            code="invalid_value",
        )
    return str(value)


@dataclass
class Job:
    kind: str  # "generation" | "edit" | "variation"
    model: str
    prompt: str
    n: int
    size: str | None  # as requested
    width: int
    height: int
    output_format: str
    output_format_given: bool
    compression: int
    quality: str  # resolved low|medium|high
    background: str  # resolved transparent|opaque
    response_format: str  # url | b64_json
    stream: bool
    partial_images: int
    image_count: int = 0
    has_mask: bool = False
    seed_extra: str = ""

    @property
    def is_dalle(self) -> bool:
        return self.model.startswith("dall-e")

    @property
    def echo_size(self) -> str:
        return self.size if self.size and self.size != "auto" else f"{DEFAULT_SIDE}x{DEFAULT_SIDE}"

    def seed(self, index: int, partial: int | None = None) -> str:
        tail = "" if partial is None else f"|partial{partial}"
        return f"{self.kind}|{self.prompt}|{self.seed_extra}|{index}{tail}"

    def render(self, index: int, partial: int | None = None) -> bytes:
        return make_image(
            self.seed(index, partial),
            self.width,
            self.height,
            self.output_format,
            self.background == "transparent",
            self.compression,
        )

    def usage(self, images: int) -> dict[str, Any]:
        text = len(self.prompt) // 4 + 1 if self.prompt else 0
        image_in = 194 * self.image_count
        out = _OUTPUT_TOKENS[self.quality] * images
        return {
            "input_tokens": text + image_in,
            "input_tokens_details": {"text_tokens": text, "image_tokens": image_in},
            "output_tokens": out,
            "output_tokens_details": {"text_tokens": 0, "image_tokens": out},
            "total_tokens": text + image_in + out,
        }


def _parse_job(rec: Recorded, kind: str, default_model: str) -> Job:
    model = _param(rec, "model") or default_model
    if not isinstance(model, str):
        raise ApiError(
            400, "Invalid type for 'model': expected a string.", param="model", code="invalid_type"
        )
    prompt = _param(rec, "prompt")
    if kind != "variation":
        if prompt is None or prompt == "":
            raise ApiError(
                400,
                "Missing required parameter: 'prompt'.",
                param="prompt",
                code="missing_required_parameter",
            )
        if not isinstance(prompt, str):
            raise ApiError(
                400, "Invalid type for 'prompt': expected a string.", param="prompt", code="invalid_type"
            )
    n = _int(rec, "n", 1, 1, 10)
    if model == "dall-e-3" and n != 1:
        raise ApiError(400, "You must provide n=1 for this model.", param="n", code="invalid_value")
    size = _param(rec, "size")
    width = height = DEFAULT_SIDE
    if size is not None and size != "auto":
        match = _SIZE_RE.match(str(size))
        if match is None or int(match[1]) == 0 or int(match[2]) == 0:
            raise ApiError(
                400,
                f"Invalid value: '{size}'. Supported values are: '1024x1024', '1024x1536', "
                "'1536x1024', and 'auto'.",
                param="size",
                code="invalid_value",
            )
        width, height = int(match[1]), int(match[2])
    fmt = _choice(rec, "output_format", ("png", "jpeg", "webp"), "png") or "png"
    response_format = _choice(rec, "response_format", ("url", "b64_json"), None)
    if response_format is None:
        response_format = "url" if model.startswith("dall-e") else "b64_json"
    quality = _param(rec, "quality")
    background = _param(rec, "background")
    stream = _bool(rec, "stream")
    return Job(
        kind=kind,
        model=model,
        prompt=prompt or "",
        n=n,
        size=None if size is None else str(size),
        width=min(width, MAX_SIDE),
        height=min(height, MAX_SIDE),
        output_format=fmt,
        output_format_given=_param(rec, "output_format") is not None,
        compression=_int(rec, "output_compression", 100, 0, 100),
        quality=quality if quality in _OUTPUT_TOKENS else "medium",
        background="transparent" if background == "transparent" else "opaque",
        response_format=response_format,
        stream=stream,
        partial_images=_int(rec, "partial_images", 0, 0, 3) if stream else 0,
    )


def _is_image_part(name: str) -> bool:
    return name == "image" or _INDEXED_IMAGE_RE.match(name) is not None


def _json_image_ref(item: Any, param: str) -> str:
    """Validate one JSON edit image reference; returns its kind: data | url | file_id."""
    if not isinstance(item, dict) or len(item) != 1 or not ({"image_url", "file_id"} & item.keys()):
        raise ApiError(
            400,
            f"Invalid '{param}': each item needs exactly one of 'image_url' or 'file_id'.",
            param=param,
            code="invalid_value",
        )
    if "file_id" in item:
        return "file_id"
    url = item["image_url"]
    if not isinstance(url, str):
        raise ApiError(
            400, f"Invalid type for '{param}.image_url': expected a string.", param=param, code="invalid_type"
        )
    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if not header.startswith("data:image/") or ";base64" not in header:
            raise ApiError(
                400,
                f"Invalid '{param}.image_url': expected a base64 image data URL.",
                param=param,
                code="invalid_image_url",
            )
        try:
            base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400, f"Invalid '{param}.image_url': bad base64 data.", param=param, code="invalid_image_url"
            ) from None
        return "data"
    if url.startswith(("http://", "https://")):
        return "url"
    raise ApiError(
        400,
        f"Invalid '{param}.image_url': expected an https URL or a data URL.",
        param=param,
        code="invalid_image_url",
    )


def _edit_inputs(rec: Recorded) -> tuple[int, bool, list[str]]:
    """(image count, mask present, source kinds) for an edit in either encoding."""
    if isinstance(rec.json, dict):
        images = rec.json.get("images")
        if not isinstance(images, list) or not images:
            raise ApiError(
                400,
                "Missing required parameter: 'images'.",
                param="images",
                code="missing_required_parameter",
            )
        if len(images) > 16:
            raise ApiError(
                400, "Invalid 'images': too many images (max 16).", param="images", code="invalid_value"
            )
        sources = [_json_image_ref(item, "images") for item in images]
        mask = rec.json.get("mask")
        if mask is not None:
            _json_image_ref(mask, "mask")
        return len(images), mask is not None, sources
    count = sum(len(parts) for name, parts in rec.files.items() if _is_image_part(name))
    if count == 0:
        raise ApiError(
            400, "Missing required parameter: 'image'.", param="image", code="missing_required_parameter"
        )
    return count, bool(rec.files.get("mask")), ["file"] * count


# --------------------------------------------------------------------------- handlers


def _request_id() -> str:
    return "req_" + secrets.token_hex(16)


def _error_response(err: ApiError) -> web.Response:
    return web.json_response(err.body, status=err.status, headers={"x-request-id": _request_id()})


class _Handlers:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    def _auth(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(401, MISSING_KEY_MESSAGE, code="invalid_api_key")
        if key in self.state.bad_keys:
            raise ApiError(401, BAD_KEY_MESSAGE, code="invalid_api_key")

    @staticmethod
    def _rec(request: web.Request) -> Recorded:
        rec: Recorded = request["rec"]
        if rec.json is None and rec.raw and request.content_type.endswith("json"):
            raise ApiError(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
            )
        return rec

    async def generations(self, request: web.Request) -> web.StreamResponse:
        try:
            self._auth(request)
            rec = self._rec(request)
            if not isinstance(rec.json, dict):
                raise ApiError(400, "Expected a JSON body (Content-Type: application/json).")
            job = _parse_job(rec, "generation", "dall-e-2")
        except ApiError as err:
            return _error_response(err)
        return await self._answer(request, rec, job)

    async def edits(self, request: web.Request) -> web.StreamResponse:
        try:
            self._auth(request)
            rec = self._rec(request)
            job = _parse_job(rec, "edit", "gpt-image-1.5")
            job.image_count, job.has_mask, sources = _edit_inputs(rec)
            job.seed_extra = f"{job.image_count}|{job.has_mask}"
            rec.extra["image_sources"] = sources
        except ApiError as err:
            return _error_response(err)
        return await self._answer(request, rec, job)

    async def variations(self, request: web.Request) -> web.StreamResponse:
        try:
            self._auth(request)
            rec = self._rec(request)
            job = _parse_job(rec, "variation", "dall-e-2")
            images = [part for name, parts in rec.files.items() if _is_image_part(name) for part in parts]
            if not images:
                raise ApiError(
                    400,
                    "Missing required parameter: 'image'.",
                    param="image",
                    code="missing_required_parameter",
                )
            job.image_count = len(images)
            job.seed_extra = hashlib.sha256(images[0][2]).hexdigest()[:16]
            job.stream = False
        except ApiError as err:
            return _error_response(err)
        return await self._answer(request, rec, job)

    async def models(self, request: web.Request) -> web.StreamResponse:
        try:
            self._auth(request)
        except ApiError as err:
            return _error_response(err)
        model_id = request.match_info.get("model")
        if model_id is not None:
            if model_id not in MODELS:
                return _error_response(
                    ApiError(
                        404, f"The model '{model_id}' does not exist", param="model", code="model_not_found"
                    )
                )
            return web.json_response(_model(model_id))
        return web.json_response({"object": "list", "data": [_model(m) for m in MODELS]})

    async def files(self, request: web.Request) -> web.StreamResponse:
        stored = request.app[FILES].get(request.match_info["name"])
        if stored is None:
            return web.Response(status=404, text="BlobNotFound")
        data, ctype = stored
        return web.Response(body=data, content_type=ctype)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        return _error_response(ApiError(404, f"Invalid URL ({request.method} {request.path})"))

    async def _answer(self, request: web.Request, rec: Recorded, job: Job) -> web.StreamResponse:
        rec.extra.update(
            kind=job.kind,
            model=job.model,
            prompt=job.prompt,
            n=job.n,
            size=job.size,
            image_count=job.image_count,
            has_mask=job.has_mask,
            stream=job.stream,
            response_format=job.response_format,
            output_format=job.output_format,
            partial_images=job.partial_images,
        )
        if job.stream:
            return await self._stream(request, job)
        data: list[dict[str, Any]] = []
        for i in range(job.n):
            blob = job.render(i)
            item: dict[str, Any]
            if job.response_format == "url":
                name = f"img-{secrets.token_hex(8)}.{job.output_format}"
                request.app[FILES][name] = (blob, _CONTENT_TYPES[job.output_format])
                item = {"url": f"{request.scheme}://{request.host}/files/{name}"}
            else:
                item = {"b64_json": base64.b64encode(blob).decode()}
            if job.model == "dall-e-3":
                item["revised_prompt"] = f"A detailed, high-quality rendering of: {job.prompt}"
            data.append(item)
        body: dict[str, Any] = {"created": int(time.time()), "data": data}
        if not job.is_dalle:
            body.update(
                background=job.background,
                output_format=job.output_format,
                size=job.echo_size,
                quality=job.quality,
                usage=job.usage(job.n),
            )
        elif job.output_format_given:
            body["output_format"] = job.output_format
        return web.json_response(body, headers={"x-request-id": _request_id(), "openai-processing-ms": "12"})

    async def _stream(self, request: web.Request, job: Job) -> web.StreamResponse:
        prefix = "image_edit" if job.kind == "edit" else "image_generation"
        common = {
            "background": job.background,
            "output_format": job.output_format,
            "quality": job.quality,
            "size": job.echo_size,
        }
        events: list[dict[str, Any]] = []
        for i in range(job.n):
            for p in range(job.partial_images):
                events.append(
                    {
                        "type": f"{prefix}.partial_image",
                        "b64_json": _b64(job.render(i, p)),
                        "created_at": int(time.time()),
                        "partial_image_index": p,
                        **common,
                    }
                )
            events.append(
                {
                    "type": f"{prefix}.completed",
                    "b64_json": _b64(job.render(i)),
                    "created_at": int(time.time()),
                    **common,
                    "usage": job.usage(1),
                }
            )
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "x-request-id": _request_id(),
            }
        )
        await resp.prepare(request)
        for k, event in enumerate(events):
            if k and self.state.stream_gap_s:
                await asyncio.sleep(self.state.stream_gap_s)
            await resp.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
        await resp.write_eof()
        return resp


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": 1698785189, "owned_by": "system"}


# --------------------------------------------------------------------------- app / server


def build_app(state: FakeState) -> web.Application:
    h = _Handlers(state)
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 * 1024 * 1024)
    app[FILES] = {}
    app.router.add_post("/v1/images/generations", h.generations)
    app.router.add_post("/v1/images/edits", h.edits)
    app.router.add_post("/v1/images/variations", h.variations)
    app.router.add_get("/v1/models", h.models)
    app.router.add_get("/v1/models/{model}", h.models)
    app.router.add_get("/files/{name}", h.files)
    app.router.add_route("*", "/{tail:.*}", h.not_found)
    return app


def start(port: int = 0) -> FakeServer:
    """A fresh FakeState and a started server (call .stop(), or use `with FakeServer(...)` instead)."""
    state = FakeState()
    return FakeServer(build_app(state), state, port).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI Images API upstream")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before every answer")
    parser.add_argument("--stream-gap", type=float, default=0.05, help="seconds between streamed events")
    args = parser.parse_args(argv)
    state = FakeState()
    state.delay_s = args.delay
    state.stream_gap_s = args.stream_gap
    serve_forever(build_app(state), args.port)


if __name__ == "__main__":
    main()
