"""Google's Gemini API: Gemini image models ("Nano Banana") and Imagen 4, with a Gemini API key.

References: https://ai.google.dev/gemini-api/docs/image-generation (generateContent, responseModalities,
imageConfig.aspectRatio / imageSize, inline image parts, edits as image parts in `contents`),
https://ai.google.dev/gemini-api/docs/imagen (`:predict`, instances[].prompt, parameters.sampleCount /
aspectRatio / imageSize / personGeneration), https://ai.google.dev/api (the `x-goog-api-key` header,
GEMINI_API_KEY). Wire details: google_wire.py and docs/protocols.md §7 (Google).

Synchronous: one call per image for Gemini models (n as parallel calls), one call with sampleCount for
Imagen. `stream: true` is served by the engine's emulation (Gemini's stream sends the image whole, as one
chunk: no progress to relay). Edits (Gemini models only): the caller's images go inline, base64; URLs are
fetched under the egress policy that admitted them. Options (provider or route): `image_size` (1K/2K/4K
default for models that take it), `person_generation` (Imagen), `response_modalities` (["TEXT", "IMAGE"]).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import msgspec

from ..core.types import CallContext, ImageRequest, ProviderResult
from ..errors import InvalidRequest
from ..media.convert import sniff_format
from ..media.sizes import png_size
from . import google_wire as wire
from .base import Capabilities, RouteSpec, SyncProvider
from .http import HttpProvider, fan_out
from .references import caller_bytes

DOWNLOAD_MAX = 20 << 20  # inline request data is capped at 20 MB upstream


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    image_size: str | None = None
    person_generation: str | None = None
    response_modalities: tuple[str, ...] = ("TEXT", "IMAGE")


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def _routes() -> tuple[RouteSpec, ...]:
    return (
        RouteSpec("gemini-2.5-flash-image", "gemini-2.5-flash-image", aliases=("nano-banana-google",),
                  description="Google Gemini 2.5 Flash Image (Nano Banana), GEMINI_API_KEY"),
        RouteSpec("gemini-3-pro-image-preview", "gemini-3-pro-image-preview",
                  description="Google Gemini 3 Pro Image (Nano Banana Pro), 1K/2K/4K"),
        RouteSpec("imagen-4.0-generate-001", "imagen-4.0-generate-001", description="Google Imagen 4"),
        RouteSpec("imagen-4.0-fast-generate-001", "imagen-4.0-fast-generate-001", description="Google Imagen 4 Fast"),
        RouteSpec("imagen-4.0-ultra-generate-001", "imagen-4.0-ultra-generate-001",
                  description="Google Imagen 4 Ultra"),
    )


class GoogleProvider(HttpProvider, SyncProvider):
    name: ClassVar[str] = "google"
    env_prefix: ClassVar[str] = "GEMINI"
    key_env_aliases: ClassVar[tuple[str, ...]] = ("GOOGLE_API_KEY",)
    default_base_url: ClassVar[str] = "https://generativelanguage.googleapis.com"
    label: ClassVar[str] = "Google"
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=wire.IMAGEN_MAX_N, takes_aspect_ratio=True,
                                                        aspect_ratios=wire.GEMINI_RATIOS)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions

    def _url(self, model: str, method: str) -> str:
        return f"{self.base_url}/v1beta/models/{quote(model, safe='.-_')}:{method}"

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        o: RouteOptions = self.route_options(ctx)
        model = ctx.upstream_model
        headers = {"x-goog-api-key": ctx.api_key or ""}
        usage: dict[str, Any] | None = None
        if wire.is_imagen(model):
            if req.operation != "generate":
                raise InvalidRequest(f"Imagen ({model}) only generates; use a Gemini image model for edits.",
                                     param="model", code="unsupported_operation")
            raw = await self._post(self._url(model, "predict"), wire.imagen_body(req, model, o), headers, ctx)
            images = wire.imagen_images(raw)
        else:
            body = wire.gemini_body(req, model, await self._inline_images(req, ctx), o)
            url = self._url(model, "generateContent")
            answers = await fan_out([self._post(url, body, headers, ctx) for _ in range(req.n)])
            images = []
            usage = {}  # (summed over the n calls)
            for raw in answers:
                got, used = wire.gemini_images(raw)
                images.append(got[-1])  # the last image part is the final one
                for k, v in (used or {}).items():
                    if isinstance(v, int) and usage is not None:
                        usage[k] = usage.get(k, 0) + v
        meta: dict[str, Any] = {}
        size = png_size(images[0].b64)
        if size:
            meta["size"] = size
        return ProviderResult(images, usage=_usage(usage), meta=meta)

    async def _post(self, url: str, body: dict[str, Any], headers: Mapping[str, str], ctx: CallContext) -> bytes:
        answer = await self.call(url, ctx, json=body, headers=headers)
        if answer.status >= 400:
            raise wire.google_error(answer.status, answer.body, answer.headers, [ctx.api_key])
        return answer.body

    async def _inline_images(self, req: ImageRequest, ctx: CallContext) -> list[tuple[str, str]]:
        out = []
        for i, img in enumerate(req.images):
            if img.data is None and not img.url:
                continue
            data = await caller_bytes(img, ctx, "image", f"reference image {i + 1}", DOWNLOAD_MAX)
            if data:
                out.append((_mime(data, img.content_type), base64.b64encode(data).decode()))
        return out


def _mime(data: bytes, declared: str) -> str:
    """The image's type by its magic bytes (multipart parts often say application/octet-stream)."""
    fmt = sniff_format(data)
    if fmt in ("png", "jpeg", "webp"):
        return f"image/{fmt}"
    return declared if declared.startswith("image/") else "image/png"


def _usage(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """Gemini's usageMetadata in the Images API's usage shape (token counts)."""
    if not meta:
        return None
    inp, out = int(meta.get("promptTokenCount") or 0), int(meta.get("candidatesTokenCount") or 0)
    return {"input_tokens": inp, "output_tokens": out, "total_tokens": int(meta.get("totalTokenCount") or inp + out)}
