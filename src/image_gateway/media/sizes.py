"""Size strings (`WxH`, `auto`) to pixels, and fitting a requested shape to what an upstream takes."""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Sequence
from typing import Any

from ..errors import InvalidRequest

# WIDTHxHEIGHT (x, X, × or *), the one size pattern of the gateway.
SIZE_RE = re.compile(r"^\s*(\d{1,5})\s*[xX×*]\s*(\d{1,5})\s*$")


def parse_size(size: str | None, default: tuple[int, int] = (1024, 1024), max_side: int = 4096,
               min_side: int = 16) -> tuple[int, int]:
    """`1024x1536` → (1024, 1536), clamped; `auto`/None → default. Invalid → ValueError."""
    if size is None or size == "auto":
        return default
    m = SIZE_RE.match(size)
    if not m:
        raise ValueError(f"size must be WIDTHxHEIGHT or 'auto', got {size!r}")
    w, h = int(m.group(1)), int(m.group(2))
    return max(min_side, min(w, max_side)), max(min_side, min(h, max_side))


# --- Fitting a request's shape to what an upstream takes -------------------------------------------
# An adapter declares what its upstream takes (pixel sizes, an aspect-ratio enum, a megapixel budget
# with a side multiple, or 1K/2K/4K tiers) and asks for the nearest; it reports what it sent as
# `ProviderResult.meta["size"]`, which the API echoes as `size` and the `X-Gateway-Size` header.

_RATIO_RE = re.compile(r"^\s*(\d{1,6})\s*[:：]\s*(\d{1,6})\s*$")  # ASCII digits only (re's \d is ASCII below)
_ASCII = re.ASCII


def parse_ratio_text(ratio: str) -> tuple[int, int] | None:
    """`16:9` → (16, 9); None for anything else (`²`, 0, an overlong number)."""
    m = re.match(_RATIO_RE.pattern, ratio, _ASCII)
    if not m or not int(m.group(1)) or not int(m.group(2)):
        return None
    return int(m.group(1)), int(m.group(2))


def _log_aspect(w: float, h: float) -> float:
    return math.log(w / h)


def _ratio_aspect(r: str) -> float:
    wh = parse_ratio_text(r)
    if wh is None:
        raise ValueError(f"not a ratio: {r!r}")
    return _log_aspect(*wh)


def nearest_ratio_of(width: int, height: int, allowed: Sequence[str]) -> str:
    """The ratio in `allowed` closest to width:height (by log aspect, so 1:2 and 2:1 are equally far from 1:1)."""
    target = _log_aspect(width, height)
    return min(allowed, key=lambda r: abs(_ratio_aspect(r) - target))


def nearest_size_of(width: int, height: int, allowed: Sequence[str]) -> str:
    """The `WxH` in `allowed` closest in shape, then in area."""
    target, area = _log_aspect(width, height), width * height

    def distance(s: str) -> tuple[float, float]:
        w, h = parse_size(s, max_side=1 << 16, min_side=1)
        return round(abs(_log_aspect(w, h) - target), 6), abs(math.log(w * h / area))

    return min(allowed, key=distance)


def fit_pixels(width: int, height: int, *, multiple: int = 64, min_side: int = 256, max_side: int = 2048,
               max_pixels: int | None = None) -> tuple[int, int]:
    """width×height scaled (keeping the shape) into the bounds, each side a multiple of `multiple`."""
    scale = 1.0
    if max_pixels and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
    scale = min(scale, max_side / max(width, height))
    scale = max(scale, min_side / min(width, height))
    w = max(min_side, min(max_side, int(width * scale / multiple) * multiple or multiple))
    h = max(min_side, min(max_side, int(height * scale / multiple) * multiple or multiple))
    return w, h


def tier_of(long_side: int, tiers: Sequence[tuple[str, int]]) -> str:
    """The tier (e.g. ("1K", 1024), ("2K", 2048), ("4K", 4096)) whose side is nearest (geometrically)."""
    return min(tiers, key=lambda t: abs(math.log(long_side / t[1])))[0]


def requested_shape(size: str | None, ratio: Any = None) -> tuple[int, int] | None:
    """What the caller asked for as width, height: an explicit ratio (the caller's `aspect_ratio`, or the
    prompt pipeline's) as that ratio on a 1024 long side, else `size`; None for neither / `auto`.
    A malformed value raises InvalidRequest naming the parameter."""
    if ratio not in (None, "", "auto"):
        wh = parse_ratio_text(ratio) if isinstance(ratio, str) else None
        if wh is None:
            raise InvalidRequest("'aspect_ratio' must look like 16:9.", param="aspect_ratio", code="invalid_value")
        w, h = wh
        return (1024, max(1, round(1024 * h / w))) if w >= h else (max(1, round(1024 * w / h)), 1024)
    if size in (None, "", "auto"):
        return None
    try:
        return parse_size(size, max_side=1 << 16, min_side=1)
    except ValueError:
        raise InvalidRequest(f"'size' must be WIDTHxHEIGHT or 'auto', got {str(size)[:40]!r}.", param="size",
                             code="invalid_value") from None


def png_size(b64: str | None) -> str | None:
    """WxH of a base64 PNG from its IHDR (the first 24 bytes), without decoding the rest."""
    if not b64:
        return None
    try:
        head = base64.b64decode(b64[:32])
    except (ValueError, binascii.Error):
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return f"{w}x{h}"
