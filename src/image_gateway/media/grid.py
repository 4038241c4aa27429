"""Splitting a Midjourney-style 2×2 grid into its four images.

Quadrant order is MJ's button order: U1 top-left, U2 top-right, U3 bottom-left, U4 bottom-right.
Decoding and encoding are CPU work, so the async entry point runs them in a thread.
"""

from __future__ import annotations

import asyncio
import io

from PIL import Image

from .convert import sniff_format


def split_grid(data: bytes) -> list[bytes]:
    """The four quadrants of a grid image, each encoded in the grid's own format (PNG unless JPEG/WebP)."""
    fmt = {"jpeg": "JPEG", "webp": "WEBP"}.get(sniff_format(data) or "", "PNG")
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        w, h = img.size
        if w < 2 or h < 2:
            raise ValueError(f"a {w}x{h} image is too small to be a 2x2 grid")
        hw, hh = w // 2, h // 2
        boxes = [(0, 0, hw, hh), (hw, 0, w, hh), (0, hh, hw, h), (hw, hh, w, h)]
        out = []
        for box in boxes:
            tile = img.crop(box)
            if fmt == "JPEG" and tile.mode not in ("RGB", "L"):
                tile = tile.convert("RGB")
            buf = io.BytesIO()
            if fmt == "PNG":
                tile.save(buf, "PNG", compress_level=1)
            else:
                tile.save(buf, fmt, quality=95)
            out.append(buf.getvalue())
        return out


async def split_grid_async(data: bytes) -> list[bytes]:
    return await asyncio.to_thread(split_grid, data)
