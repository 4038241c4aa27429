"""Automatic1111 stable-diffusion-webui API (also spoken by Forge and SD.Next): docs/protocols.md §17.

References: the web UI's wiki page "API" (github.com/AUTOMATIC1111/stable-diffusion-webui/wiki/API)
and its source, modules/api/api.py (routes, --api-auth basic auth, the error middleware's
`{error, detail, body, errors}` bodies, progressapi) and modules/api/models.py (the request and
response models: StableDiffusionTxt2ImgProcessingAPI, TextToImageResponse, ProgressResponse).

* generate: `POST /sdapi/v1/txt2img` {prompt, negative_prompt, width, height, steps, cfg_scale, seed,
  batch_size (= n), sampler_name, override_settings: {sd_model_checkpoint}} → {images: [base64],
  parameters, info (a JSON string: seed, all_seeds, index_of_first_image...)}. With batch_size > 1
  the web UI puts the grid first when "return grid" is on: `info.index_of_first_image` says where
  the batch starts, and extensions (ControlNet) may append images after it, so n are taken from there.
* edits: `POST /sdapi/v1/img2img` with init_images (base64), mask (base64) and denoising_strength.
* stream: while the call runs, `GET /sdapi/v1/progress` (progress 0..1, eta_relative, current_image:
  the live preview, base64) every `progress_interval_s` becomes Progress with a partial image. The
  web UI runs one job at a time for everyone, so progress is that of its running job.
* auth: A1111_AUTH `user:password` as HTTP basic (the key slot: scrubbed, never logged).

Route option `checkpoint` (or a route's upstream_model other than "a1111") → override_settings.
Other options (provider or route): sampler_name, scheduler, steps (20), cfg_scale (7), negative_prompt,
denoising_strength (0.75), progress_interval_s (0.5).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec

from ..core.types import CallContext, GeneratedImage, ImageRequest, Progress, ProviderEvent, ProviderResult
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from .base import Capabilities, RouteSpec, StreamingProvider, SyncProvider
from .errmap import error
from .http import Answer, HttpProvider, retry_after
from .references import caller_bytes
from .selfhosted import (
    basic_auth,
    content_type_of,
    dimensions,
    float_field,
    int_field,
    probe_get,
    seed_of,
    str_field,
)

TXT2IMG, IMG2IMG, PROGRESS = "/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/progress"
MAX_N = 8
NAME = "Automatic1111"


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    checkpoint: str | None = None  # override_settings.sd_model_checkpoint; None: the loaded one
    sampler_name: str | None = None
    scheduler: str | None = None  # (A1111 1.9+, Forge)
    steps: int = 20
    cfg_scale: float = 7.0
    negative_prompt: str | None = None
    denoising_strength: float = 0.75
    progress_interval_s: float = 0.5


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class A1111Provider(HttpProvider, SyncProvider, StreamingProvider):
    name: ClassVar[str] = "a1111"
    env_prefix: ClassVar[str] = "A1111"
    key_env: ClassVar[str | None] = "A1111_AUTH"  # user:password (--api-auth)
    default_base_url: ClassVar[str] = "http://127.0.0.1:7860"
    label: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, masks=True, max_n=MAX_N, needs_key=False)
    Options = Options
    RouteOptions = RouteOptions
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        RouteSpec("a1111", "a1111", description="Automatic1111 / Forge / SD.Next web UI, its loaded checkpoint "
                                                 "(A1111_BASE_URL)"),
    )

    async def probe(self) -> bool | None:
        return await probe_get(self.session, f"{self.base_url}{PROGRESS}?skip_current_image=true",
                               basic_auth(self.settings.api_key))

    async def body(self, req: ImageRequest, ctx: CallContext) -> dict[str, Any]:
        o: RouteOptions = self.route_options(ctx)
        x = req.extra
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "negative_prompt": str_field(x.get("negative_prompt"), "negative_prompt") or o.negative_prompt or "",
            "steps": int_field(x.get("steps"), "steps", 1, 150) or o.steps,
            "cfg_scale": _first(float_field(x.get("cfg_scale", x.get("cfg")), "cfg_scale", 0, 30), o.cfg_scale),
            "seed": seed_of(req),
            "batch_size": req.n,
            "n_iter": 1,
            "send_images": True,
            "save_images": False,
        }
        size = dimensions(req, (1024, 1024) if req.operation == "generate" else None)
        if size is not None:
            body["width"], body["height"] = size
        sampler = str_field(x.get("sampler_name"), "sampler_name") or o.sampler_name
        if sampler:
            body["sampler_name"] = sampler
        scheduler = str_field(x.get("scheduler"), "scheduler") or o.scheduler
        if scheduler:
            body["scheduler"] = scheduler
        checkpoint = o.checkpoint or (ctx.upstream_model if ctx.upstream_model not in ("", self.name) else None)
        if checkpoint:
            body["override_settings"] = {"sd_model_checkpoint": checkpoint}
            body["override_settings_restore_afterwards"] = True
        if req.operation == "edit":
            if not req.images:
                raise InvalidRequest("An edit needs an image.", param="image")
            body["init_images"] = [base64.b64encode(await caller_bytes(img, ctx, "image")).decode()
                                   for img in req.images]
            if req.mask is not None:
                body["mask"] = base64.b64encode(await caller_bytes(req.mask, ctx, "mask")).decode()
            body["denoising_strength"] = _first(
                float_field(x.get("denoising_strength"), "denoising_strength", 0, 1), o.denoising_strength)
        return body

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        return basic_auth(ctx.api_key)

    async def _run(self, req: ImageRequest, ctx: CallContext, body: dict[str, Any]) -> ProviderResult:
        path = IMG2IMG if req.operation == "edit" else TXT2IMG
        a = await self.call(self.base_url + path, ctx, json=body, headers=self._headers(ctx))
        return result_of(a, req.n, body, [ctx.api_key])

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        # (variations and n > MAX_N never get here: the router checks the capabilities)
        return await self._run(req, ctx, await self.body(req, ctx))

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        body = await self.body(req, ctx)
        interval = max(0.05, self.route_options(ctx).progress_interval_s)
        job = asyncio.ensure_future(self._run(req, ctx, body))
        try:
            last: tuple[int, str | None] = (-1, None)
            while True:
                done, _ = await asyncio.wait({job}, timeout=interval)
                if done:
                    break
                p = await self._progress(ctx)
                now = (p.percent, p.preview.b64 if p.preview else None) if p is not None else last
                if p is not None and now != last:
                    last = now
                    yield p
            yield job.result()
        finally:
            if not job.done():
                job.cancel()
                with contextlib.suppress(BaseException):
                    await job

    async def _progress(self, ctx: CallContext) -> Progress | None:
        """The web UI's progress now; None when it could not tell (a blip must not end the job)."""
        try:
            async with self.session.get(self.base_url + PROGRESS, headers=self._headers(ctx),
                                        timeout=aiohttp.ClientTimeout(total=10)) as r:
                data = msgspec.json.decode(await r.read()) if r.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
            return None
        if not isinstance(data, dict):
            return None
        value = data.get("progress")
        percent = int(value * 100) if isinstance(value, int | float) and not isinstance(value, bool) else 0
        image = data.get("current_image")
        preview = GeneratedImage(b64=image, content_type="image/png") if isinstance(image, str) and image else None
        return Progress(max(0, min(99, percent)), preview)


def _first(value: float | None, default: float) -> float:
    return default if value is None else value


def result_of(a: Answer, n: int, body: dict[str, Any], secrets: list[str | None]) -> ProviderResult:
    """The images of a txt2img/img2img answer, or the GatewayError its status and body say."""
    data = a.json()
    if a.status != 200:
        raise error_of(a, data, secrets)
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not all(isinstance(i, str) for i in images):
        raise UpstreamError(f"{NAME} answered without images.", code="upstream_no_image")
    info = _info(data.get("info"))
    first = info.get("index_of_first_image")
    first = first if isinstance(first, int) and 0 <= first < len(images) else max(0, len(images) - n)
    picked = images[first:first + n]
    if len(picked) < n:
        raise UpstreamError(f"{NAME} returned {len(picked)} images for {n}.", code="upstream_no_image")
    out = []
    for b64 in picked:
        try:
            head = base64.b64decode(b64[:32] + "=" * (-len(b64[:32]) % 4))
        except (binascii.Error, ValueError):
            raise UpstreamError(f"{NAME} returned an image that is not base64.", code="upstream_bad_image") from None
        out.append(GeneratedImage(b64=b64, content_type=content_type_of(head)))
    width, height = info.get("width", body.get("width")), info.get("height", body.get("height"))
    meta: dict[str, Any] = {"seed": info.get("seed", body["seed"])}
    if isinstance(width, int) and isinstance(height, int):
        meta["size"] = f"{width}x{height}"
    return ProviderResult(out, meta=meta)


def _info(raw: Any) -> dict[str, Any]:
    """`info` is a JSON document in a string."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str):
        with contextlib.suppress(msgspec.DecodeError):
            value = msgspec.json.decode(raw)
            if isinstance(value, dict):
                return value
    return {}


def _message(data: Any, status: int) -> str:
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, list):  # FastAPI's 422: [{loc, msg, type}]
            parts = [f"{'.'.join(str(p) for p in d.get('loc', ())[1:]) or 'body'}: {d.get('msg')}"
                     for d in detail if isinstance(d, dict)]
            return "; ".join(parts)[:500] or "invalid request"
        for k in ("detail", "errors", "error"):
            v = data.get(k)
            if isinstance(v, str) and v.strip():
                return v.strip()[:500]
    return f"HTTP {status}"


def error_of(a: Answer, data: Any, secrets: list[str | None]) -> GatewayError:
    """The web UI's error answers: 401 (--api-auth), 422 (a body FastAPI refused), 404 (sampler or
    model not found), 500 {error, detail, body, errors} (an exception while generating)."""
    msg = redact(_message(data, a.status), secrets)
    kind = data.get("error") if isinstance(data, dict) else None
    if a.status in (401, 403):
        return error("auth", f"{NAME} refused the credentials (A1111_AUTH): {msg}")
    if a.status in (404, 422):
        return error("invalid", f"{NAME} refused the request: {msg}")
    if a.status == 429:
        return error("rate", f"{NAME} is busy: {msg}", retry=retry_after(a.headers))
    if a.status >= 500 and kind != "OutOfMemoryError" and "Invalid encoded image" in msg:
        return error("invalid", f"{NAME} could not read the image: {msg}", param="image", code="invalid_image")
    what = f"{kind}: {msg}" if isinstance(kind, str) and kind and kind not in msg else msg
    return UpstreamError(f"{NAME} failed: {what}", code="upstream_error", retryable=a.status >= 500)
