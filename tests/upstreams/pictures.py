"""Solid-colour images for the fake upstreams: a result's colour is a pure function of its prompt (or
seed), so a test can tell which task an image came from."""

from __future__ import annotations

import base64
import hashlib
import io
from functools import lru_cache

from PIL import Image

Color = tuple[int, int, int]
MAX_SIDE = 128


def prompt_color(prompt: str, i: int = 0) -> Color:
    d = hashlib.sha256(f"{prompt}#{i}".encode()).digest()
    return (32 + d[0] % 192, 32 + d[1] % 192, 32 + d[2] % 192)


def digest_color(*parts: object) -> Color:
    """The first three bytes of the SHA-256 of the parts joined by '#' (any colour, unlike prompt_color)."""
    d = hashlib.sha256("#".join(str(p) for p in parts).encode()).digest()
    return d[0], d[1], d[2]


def small(width: int, height: int) -> tuple[int, int]:
    """width×height scaled down so the long side is at most MAX_SIDE (the shape kept)."""
    scale = min(1.0, MAX_SIDE / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


@lru_cache(maxsize=256)
def png(color: Color, width: int = MAX_SIDE, height: int = MAX_SIDE, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, fmt)
    return buf.getvalue()


def png_b64(seed: str, width: int, height: int) -> str:
    """A width×height PNG, base64, of the colour `seed` digests to."""
    return base64.b64encode(png(digest_color(seed), width, height)).decode()
