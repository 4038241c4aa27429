"""Turning a provider's images into what the caller asked for: url or b64_json, in their format."""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..core.types import GeneratedImage
from .convert import convert_bytes
from .fetch import fetch_image
from .session import new_session
from .store import ImageStore


@dataclass(slots=True)  # read-only by convention (one per request; a frozen __init__ costs ~3x)
class Delivery:
    response_format: str  # "url" | "b64_json"
    output_format: str | None  # convert to this when the upstream could not
    output_compression: int | None
    base_url: str  # absolute base for hosted images, no trailing slash
    rehost: bool = False  # re-host upstream URLs (e.g. ones that expire)


class Deliverer:
    def __init__(self, store: ImageStore, session_factory: Any, max_bytes: int, timeout_s: float) -> None:
        self.store = store
        self._session_factory = session_factory
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def one(self, img: GeneratedImage, d: Delivery) -> dict[str, Any]:
        out: dict[str, Any] = {}
        needs_bytes = (d.response_format == "b64_json" and img.b64 is None) or d.output_format is not None \
            or (d.response_format == "url" and (img.url is None or d.rehost))
        data: bytes | None = None
        if needs_bytes:
            if img.b64 is not None:
                data = base64.b64decode(img.b64)
            elif img.url is not None:
                data = await fetch_image(self._session_factory(), img.url, self.max_bytes, self.timeout_s)
            if data is not None and d.output_format:
                data = await asyncio.to_thread(convert_bytes, data, d.output_format, d.output_compression)
        if d.response_format == "b64_json":
            out["b64_json"] = base64.b64encode(data).decode() if data is not None else img.b64
        elif data is not None:
            name = await self.store.put(data, d.output_format)
            base = self.store.public_base
            out["url"] = f"{base}/{name}" if base else f"{d.base_url}/images/{name}"
        else:
            out["url"] = img.url
        if img.revised_prompt:
            out["revised_prompt"] = img.revised_prompt
        return out

    async def all(self, images: list[GeneratedImage], d: Delivery) -> list[dict[str, Any]]:
        if len(images) == 1:
            return [await self.one(images[0], d)]
        return list(await asyncio.gather(*(self.one(i, d) for i in images)))


def new_download_session() -> aiohttp.ClientSession:
    return new_session(aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
