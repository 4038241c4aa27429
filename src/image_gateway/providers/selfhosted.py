"""What the self-hosted adapters (a1111.py, comfyui.py) share: request fields read as numbers, the
pixel size a Stable Diffusion graph takes, reference images as bytes, and the readiness probe.

Both upstreams are one GPU the operator runs (no key by default): they work in the zero-key local
mode, and `probe()` is what /ready and `image-gateway models` consult (routing/probes.py).
"""

from __future__ import annotations

import base64
import math
import random
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..core.types import CallContext, ImageRequest, InputImage
from ..errors import InvalidRequest, UpstreamError
from ..media.convert import sniff_format
from ..media.egress import STRICT
from ..media.fetch import fetch_caller_image
from ..media.sizes import requested_shape

MAX_SEED = 2**32 - 1  # both upstreams take a 32-bit seed at least (ComfyUI takes up to 2**64 - 1)
DOWNLOAD_MAX = 50 << 20
PROBE_TIMEOUT_S = 2.0


def int_field(raw: Any, name: str, lo: int | None = None, hi: int | None = None) -> int | None:
    """An integer request field (an SDK's extra_body value may be a string); None when absent."""
    if raw is None or raw == "":
        return None
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        digits = text.removeprefix("-")
        if digits.isascii() and digits.isdigit() and len(digits) <= 20:
            value = int(text)
    if value is None:
        raise InvalidRequest(f"'{name}' must be an integer.", param=name, code="invalid_value")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}.", param=name, code="invalid_value")
    return value


def float_field(raw: Any, name: str, lo: float, hi: float) -> float | None:
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise InvalidRequest(f"'{name}' must be a number.", param=name, code="invalid_value") from None
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InvalidRequest(f"'{name}' must be between {lo:g} and {hi:g}.", param=name, code="invalid_value")
    return value


def str_field(raw: Any, name: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise InvalidRequest(f"'{name}' must be a string.", param=name, code="invalid_value")
    return raw


def seed_of(req: ImageRequest) -> int:
    """The caller's seed, or a random one (-1, as several UIs send for "random", is random too)."""
    seed = int_field(req.extra.get("seed"), "seed", -1, 2**64 - 1)
    return random.randrange(MAX_SEED) if seed is None or seed < 0 else seed


def snap(value: int, multiple: int = 8, lo: int = 64, hi: int = 2048) -> int:
    return max(lo, min(hi, round(value / multiple) * multiple))


def dimensions(req: ImageRequest, default: tuple[int, int] | None) -> tuple[int, int] | None:
    """width/height extras › the requested shape (`size`, or a ratio) › `default`, each side a
    multiple of 8 within 64-2048 (what an SD latent takes). None: keep the upstream's own."""
    shape = requested_shape(req.size, req.extra.get("aspect_ratio")) or default
    w = int_field(req.extra.get("width"), "width", 1, 1 << 16)
    h = int_field(req.extra.get("height"), "height", 1, 1 << 16)
    if shape is None and w is None and h is None:
        return None
    base = shape or (w or h or 1024, h or w or 1024)
    return snap(w if w is not None else base[0]), snap(h if h is not None else base[1])


async def image_bytes(img: InputImage, ctx: CallContext, param: str) -> bytes:
    """A reference image (multipart bytes, a data URL, or the caller's URL fetched under the egress
    policy that admitted it, never through the upstream's session)."""
    if img.data is not None:
        return img.data
    if not img.url:
        raise InvalidRequest(f"'{param}' is empty.", param=param)
    try:
        return await fetch_caller_image(img.url, param, ctx.egress or STRICT, DOWNLOAD_MAX, 60.0)
    except UpstreamError as e:  # the caller's URL failed, not the upstream: a 400
        raise InvalidRequest(f"Could not download '{param}': {e.message}", param=param,
                             code="invalid_image_url") from None


def content_type_of(data: bytes) -> str:
    return f"image/{sniff_format(data) or 'png'}"


def basic_auth(credentials: str | None) -> dict[str, str]:
    """`user:password` as an HTTP basic Authorization header (the web UI's --api-auth)."""
    if not credentials:
        return {}
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


async def probe_get(session: aiohttp.ClientSession, url: str, headers: Mapping[str, str]) -> bool:
    """Whether `url` answers 200 within PROBE_TIMEOUT_S; never raises."""
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as r:
            await r.read()
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False
