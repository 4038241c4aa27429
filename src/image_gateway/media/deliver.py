"""Turning a provider's images into what the caller asked for: url, b64_json or both, in their format."""

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
    response_format: str  # "url" | "b64_json" | "both" (each image as a URL and as base64)
    output_format: str | None  # convert to this when the upstream could not
    output_compression: int | None
    base_url: str  # absolute base for hosted images, no trailing slash
    # Host upstream URLs on the gateway (the default, option `rehost`): a client that downloads a
    # returned URL with the caller's key (Open WebUI does) must never send it to a third-party host.
    rehost: bool = True


class Deliverer:
    def __init__(self, store: ImageStore, session_factory: Any, max_bytes: int, timeout_s: float) -> None:
        self.store = store
        self._session_factory = session_factory
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def one(self, img: GeneratedImage, d: Delivery) -> dict[str, Any]:
        fmt = d.response_format
        want_url, want_b64 = fmt != "b64_json", fmt != "url"
        host = want_url and (img.url is None or d.rehost)  # the URL is one of ours
        data: bytes | None = None
        if d.output_format is not None or host or (want_b64 and img.b64 is None):
            if img.b64 is not None:
                data = base64.b64decode(img.b64)
            elif img.url is not None:
                data = await fetch_image(self._session_factory(), img.url, self.max_bytes, self.timeout_s)
            if data is not None and d.output_format:
                data = await asyncio.to_thread(convert_bytes, data, d.output_format, d.output_compression)
        out: dict[str, Any] = {}
        if want_url:
            if host and data is not None:
                name = await self.store.put(data, d.output_format)
                base = self.store.public_base  # (S3_PUBLIC_BASE_URL: a public bucket or CDN)
                out["url"] = f"{base}/{name}" if base else f"{d.base_url}/images/{name}"
            else:
                out["url"] = img.url
        if want_b64:
            reuse = img.b64 is not None and d.output_format is None  # what the upstream sent, as it was
            out["b64_json"] = img.b64 if reuse or data is None else base64.b64encode(data).decode()
        if img.revised_prompt:
            out["revised_prompt"] = img.revised_prompt
        return out

    async def all(self, images: list[GeneratedImage], d: Delivery) -> list[dict[str, Any]]:
        if len(images) == 1:
            return [await self.one(images[0], d)]
        return list(await asyncio.gather(*(self.one(i, d) for i in images)))


def new_download_session() -> aiohttp.ClientSession:
    return new_session(aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60))
