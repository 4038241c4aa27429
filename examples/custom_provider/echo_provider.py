"""An image provider that lives outside the gateway: it draws the prompt into a PNG.

    # gateway.yaml (with this folder on PYTHONPATH)
    providers:
      echo: {class: "echo_provider:EchoProvider", background: "#203040"}
    routes:
      - {name: echo, provider: echo}
"""

from __future__ import annotations

import asyncio
import base64
import io
import textwrap
from typing import ClassVar

import msgspec
from PIL import Image, ImageDraw

from image_gateway.core.types import CallContext, GeneratedImage, ImageRequest, ProviderResult
from image_gateway.media.sizes import parse_size
from image_gateway.providers.base import Capabilities, RouteSpec, SyncProvider


class EchoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    background: str = "#202020"  # providers.echo.background (or per route)


class EchoProvider(SyncProvider):
    name: ClassVar[str] = "echo"
    env_prefix: ClassVar[str] = "ECHO"  # ECHO_API_KEY / ECHO_BASE_URL (neither needed here)
    default_base_url: ClassVar[str] = "local://echo"
    capabilities: ClassVar[Capabilities] = Capabilities(max_n=4, needs_key=False)
    builtin_routes: ClassVar[tuple[RouteSpec, ...]] = ()  # the YAML names the routes
    Options = EchoOptions
    RouteOptions = EchoOptions

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        size = parse_size(req.size, default=(512, 512), max_side=1024)
        colour = self.route_options(ctx).background
        png = await asyncio.to_thread(draw, req.prompt, size, colour)  # Pillow is blocking: off the loop
        return ProviderResult([GeneratedImage(b64=png, content_type="image/png") for _ in range(req.n)])


def draw(prompt: str, size: tuple[int, int], colour: str) -> str:
    img = Image.new("RGB", size, colour)
    ImageDraw.Draw(img).multiline_text((16, 16), "\n".join(textwrap.wrap(prompt, 40)), fill="white")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()
