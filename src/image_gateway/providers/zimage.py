"""梦羽 AI Z-Image on sd.exacg.cc (docs/protocols.md §4.3, §4.7): one POST, one JSON answer with an image URL.

Body: prompt, width, height, steps, cfg, model_index, seed, negative_prompt. The Images API's
`size` becomes width/height (multiples of 8, clamped to 64-2048); `width`, `height`, `cfg`, `seed`,
`steps` and `negative_prompt` may also come as extra body fields (the SDK's `extra_body`) and win.
A ratio chosen by the prompt pipeline arrives as `extra["aspect_ratio"]` and maps to ZIMAGE_SIZES.
`n` > 1 is n parallel calls with consecutive seeds. Options (per provider or per route): model_index
(5), steps (8), cfg (7.0), negative_prompt. The result URLs are the site's: the gateway re-hosts
them unless the generic `rehost` option is false (core/options.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from ..core.fields import float_field, int_field
from ..core.types import CallContext, GeneratedImage, ImageRequest, ProviderResult
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from ..media.sizes import parse_size
from .base import Capabilities, RouteSpec, SyncProvider
from .http import HttpProvider, fan_out, retry_after

GENERATE_PATH = "/api/v1/generate_image"
MIN_SIDE, MAX_SIDE = 64, 2048
DEFAULT_RATIO = "1:1"
MAX_N = 4
MAX_INT = 2**63 - 1

# Sizes for Z-Image on sd.exacg.cc. The six ratios of the seed's table are copied from it; the other
# four keep the long side at 2048 where possible (2:3 mirrors the seed's 3:2).
ZIMAGE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (2048, 2048),
    "1:2": (1024, 2048),
    "2:1": (2048, 1024),
    "2:3": (1280, 1920),
    "3:2": (1920, 1280),
    "3:4": (1536, 2048),
    "4:3": (2048, 1536),
    "9:16": (1152, 2048),
    "16:9": (2048, 1152),
    "21:9": (2048, 880),
}


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    model_index: int = 5
    steps: int = 8
    cfg: float = 7.0
    negative_prompt: str | None = None


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def snap8(value: int) -> int:
    """A side length as sd.exacg.cc takes it: a multiple of 8 within 64-2048."""
    return max(MIN_SIDE, min(MAX_SIDE, math.floor(value / 8 + 0.5) * 8))  # half up, as the seed's Math.round


def _int(raw: Any, name: str) -> int | None:
    # (larger values overflow the float arithmetic of snap8 and mean nothing upstream)
    return int_field(raw, name, max_abs=MAX_INT)


def dimensions(req: ImageRequest) -> tuple[int, int]:
    """width/height extras › `size` › the pipeline's ratio › 1:1 (2048x2048, as the seed)."""
    ratio = req.extra.get("aspect_ratio")
    base = ZIMAGE_SIZES.get(ratio if isinstance(ratio, str) else "", ZIMAGE_SIZES[DEFAULT_RATIO])
    if req.size and req.size != "auto":
        try:
            base = parse_size(req.size, max_side=1 << 16, min_side=1)
        except ValueError as e:
            raise InvalidRequest(str(e), param="size", code="invalid_value") from None
    w = _int(req.extra.get("width"), "width")
    h = _int(req.extra.get("height"), "height")
    return snap8(w if w is not None else base[0]), snap8(h if h is not None else base[1])


class ZImageProvider(HttpProvider, SyncProvider):
    name: ClassVar[str] = "zimage"
    env_prefix: ClassVar[str] = "SD"
    default_base_url: ClassVar[str] = "https://sd.exacg.cc"
    label: ClassVar[str] = "Z-Image"
    # The prompt pipeline hands a ratio over as extra["aspect_ratio"] instead of a pixel size.
    capabilities: ClassVar[Capabilities] = Capabilities(max_n=MAX_N, takes_aspect_ratio=True,
                                                        aspect_ratios=tuple(ZIMAGE_SIZES))
    Options = Options
    RouteOptions = RouteOptions
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        # model_index/steps/cfg/negative_prompt are options (per provider or per route); the
        # defaults live in body() so a provider-wide setting is not shadowed by a route default.
        RouteSpec("Z-Image", "Z-Image", aliases=("z-image",),
                  description="梦羽 AI Z-Image on sd.exacg.cc (SD_API_KEY)"),
    )

    def body(self, req: ImageRequest, ctx: CallContext) -> dict[str, Any]:
        """The upstream body for one image (seed filled in per call by generate())."""
        o: RouteOptions = self.route_options(ctx)
        width, height = dimensions(req)
        steps = _int(req.extra.get("steps"), "steps")
        steps = steps if steps is not None else o.steps
        if not 1 <= steps <= 100:
            raise InvalidRequest("'steps' must be between 1 and 100.", param="steps", code="invalid_value")
        cfg = float_field(req.extra.get("cfg"), "cfg")
        body: dict[str, Any] = {
            "prompt": req.prompt,
            "width": width,
            "height": height,
            "steps": steps,
            "cfg": cfg if cfg is not None else o.cfg,
            "model_index": o.model_index,
        }
        negative = req.extra.get("negative_prompt", o.negative_prompt)
        if negative is not None and not isinstance(negative, str):
            raise InvalidRequest("'negative_prompt' must be a string.", param="negative_prompt",
                                 code="invalid_value")
        if negative:
            body["negative_prompt"] = negative
        return body

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        # (edits, variations and n > MAX_N never get here: the router checks the capabilities)
        body = self.body(req, ctx)
        seed = _int(req.extra.get("seed"), "seed")
        if seed is None or seed < 0:  # -1 means "random" to several clients
            seed = random.randrange(2_147_483_647)
        urls = await fan_out([self._one({**body, "seed": (seed + i) % 2_147_483_647}, ctx) for i in range(req.n)])
        return ProviderResult([GeneratedImage(url=u) for u in urls],
                              meta={"size": f"{body['width']}x{body['height']}", "seed": seed})

    async def _one(self, body: dict[str, Any], ctx: CallContext) -> str:
        a = await self.call(self.base_url + GENERATE_PATH, ctx, json=body,
                            headers={"Authorization": f"Bearer {ctx.api_key}"})
        return image_url_of(a.status, a.content_type, a.body, a.headers, [ctx.api_key])


def _message(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for k in ("error", "message", "msg", "detail"):
        v = data.get(k)
        if isinstance(v, dict):
            v = v.get("message") or msgspec.json.encode(v).decode()
        if isinstance(v, str) and v.strip():
            return v.strip()
    return None


def image_url_of(status: int, ctype: str, raw: bytes, headers: Any, secrets: list[str | None]) -> str:
    """The image URL of a sd.exacg.cc answer, or a GatewayError that says what went wrong."""
    if "html" in ctype or raw.lstrip()[:1] == b"<":
        # Cloudflare's "Just a moment..." page: the site refused this server, not the prompt.
        raise UpstreamError(
            f"sd.exacg.cc refused the request (HTTP {status}, an HTML challenge page instead of JSON): "
            "the site's bot protection blocks this server. Retry later or from another network.",
            code="upstream_refused", retryable=True)
    try:
        data = msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        data = None
    msg = redact(_message(data) or f"Image generation failed with status {status}", secrets)
    if status in (401, 403):
        raise GatewayError(f"Z-Image upstream rejected the API key: {msg}", status=401,
                           type="invalid_request_error", code="invalid_api_key")
    if status == 429:
        raise GatewayError(f"Z-Image upstream is rate limiting: {msg}", status=429, type="rate_limit_error",
                           code="rate_limit_exceeded", headers=retry_after(headers), retryable=True)
    if not isinstance(data, dict) or status >= 400 or data.get("success") is not True:
        raise UpstreamError(f"Z-Image upstream error: {msg}", code="upstream_error", retryable=status >= 500)
    inner = data.get("data")
    url = inner.get("image_url") if isinstance(inner, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
        raise UpstreamError("Z-Image upstream reported success but returned no image URL.",
                            code="upstream_no_image")
    return url
