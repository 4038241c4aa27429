"""The built-in demo provider: draws a PNG locally with Pillow. A stand-in, labelled as one.

It lets the gateway work with zero keys. It is never used as a silent fallback for a real
provider: only a route (or a fallback list) that names `demo` reaches it.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import textwrap
from collections.abc import Sequence
from typing import Any, ClassVar

from PIL import Image, ImageDraw, ImageFont

from ..core.types import CallContext, GeneratedImage, ImageRequest, ProviderResult
from ..media.convert import encode_image
from ..media.sizes import parse_size
from .base import Capabilities, RouteSpec, SyncProvider

MAX_SIDE = 2048


class DemoProvider(SyncProvider):
    name: ClassVar[str] = "demo"
    env_prefix: ClassVar[str] = "DEMO"
    default_base_url: ClassVar[str] = "local://demo"
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, variations=True, masks=True, needs_key=False)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        RouteSpec("demo", "demo", description="Local stand-in: draws a placeholder PNG, no upstream, no key"),
    )

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        width, height = parse_size(req.size, default=(1024, 1024), max_side=MAX_SIDE)
        seed = req.extra.get("seed")
        fmt = req.output_format or "png"
        images = await asyncio.to_thread(
            lambda: [draw(req.prompt, width, height, seed, i, fmt, req.output_compression) for i in range(req.n)])
        return ProviderResult(
            [GeneratedImage(b64=b, revised_prompt=None, content_type=f"image/{fmt}") for b in images],
            usage=None,
            meta={"output_format": fmt, "size": f"{width}x{height}", "provider_note": "demo: local stand-in"},
        )


def _rgb(h: bytes, off: int) -> tuple[int, int, int]:
    return h[off], h[off + 1], h[off + 2]


def draw(prompt: str, width: int, height: int, seed: Any, index: int, fmt: str = "png",
         compression: int | None = None) -> str:
    """A deterministic picture of (prompt, seed, index); different prompts look visibly different."""
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{index}".encode()).digest()
    rng = random.Random(digest)
    top, bottom = _rgb(digest, 0), _rgb(digest, 3)
    img = Image.new("RGB", (width, height), top)
    # A vertical gradient drawn as bands: cheap even at 2048 px.
    bands = 64
    d = ImageDraw.Draw(img)
    for b in range(bands):
        t = b / (bands - 1)
        col = tuple(int(top[c] * (1 - t) + bottom[c] * t) for c in range(3))
        d.rectangle((0, b * height // bands, width, (b + 1) * height // bands), fill=col)
    for _ in range(6 + digest[6] % 6):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        r = rng.randrange(max(4, min(width, height) // 12), max(8, min(width, height) // 3))
        fill = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        if rng.random() < 0.5:
            d.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), fill=fill)
        else:
            d.rectangle((x0 - r, y0 - r // 2, x0 + r, y0 + r // 2), fill=fill)
    fsize = max(10, min(width, height) // 24)
    font = ImageFont.load_default(size=fsize)
    banner = "DEMO - local stand-in, not a real model"
    text = "\n".join(textwrap.wrap(prompt, 40)[:4])
    pad = max(4, min(width, height) // 64)
    d.rectangle((0, 0, width, pad * 4 + fsize * 2), fill=(0, 0, 0))
    d.text((pad, pad), banner, fill=(255, 255, 0), font=font)
    d.text((pad, height - pad - fsize * (text.count("\n") + 1) * 1.3), text, fill=(255, 255, 255), font=font,
           stroke_width=2, stroke_fill=(0, 0, 0))
    return encode_image(img, fmt, compression)
