"""What the self-hosted adapters (a1111.py, comfyui.py) share: request fields read as numbers within
a range (core/fields.py, plus the bounds each UI takes), the seed, the pixel size a Stable Diffusion
graph takes, and the readiness probe. Reference images come from providers/references.py.

Both upstreams are one GPU the operator runs (no key by default): they work in the zero-key local
mode, and `probe()` is what /ready and `image-gateway models` consult (routing/probes.py).
"""

from __future__ import annotations

import base64
import random
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..core import fields
from ..core.types import ImageRequest
from ..errors import InvalidRequest
from ..media.convert import sniff_format
from ..media.sizes import requested_shape

MAX_SEED = 2**32 - 1  # both upstreams take a 32-bit seed at least (ComfyUI takes up to 2**64 - 1)
WIDEST = 10**20 - 1  # what the range checks below see: any 20-digit field (ComfyUI's seed is 64-bit)
PROBE_TIMEOUT_S = 2.0


def int_field(raw: Any, name: str, lo: int, hi: int) -> int | None:
    """An integer request field within [lo, hi] (an SDK's extra_body value may be a string); None when absent."""
    value = fields.int_field(raw, name, max_abs=WIDEST)
    if value is not None and not lo <= value <= hi:
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}.", param=name, code="invalid_value")
    return value


def float_field(raw: Any, name: str, lo: float, hi: float) -> float | None:
    """A number request field within [lo, hi]; None when absent."""
    value = fields.float_field(raw, name)
    if value is not None and not lo <= value <= hi:
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
