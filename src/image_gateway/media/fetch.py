"""Downloading an image an upstream returned as a URL, with a size cap and a time limit."""

from __future__ import annotations

import asyncio
import base64
import binascii

import aiohttp

from ..errors import UpstreamError


def decode_data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or ";base64" not in head:
        raise ValueError("not a base64 data URL")
    try:
        return base64.b64decode(payload, validate=False)
    except binascii.Error as e:
        raise ValueError("invalid base64 in data URL") from e


async def fetch_image(session: aiohttp.ClientSession, url: str, max_bytes: int, timeout_s: float) -> bytes:
    """The bytes behind an image URL (http(s) or data:). Raises UpstreamError with a clear message."""
    if url.startswith("data:"):
        try:
            return decode_data_url(url)
        except ValueError as e:
            raise UpstreamError(f"upstream returned an unusable image: {e}") from None
    try:
        async with asyncio.timeout(timeout_s):
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise UpstreamError(f"could not download the generated image (HTTP {resp.status})")
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise UpstreamError(f"generated image is larger than the {max_bytes} byte download limit")
                chunks, total = [], 0
                async for chunk in resp.content.iter_chunked(1 << 16):
                    total += len(chunk)
                    if total > max_bytes:
                        raise UpstreamError(f"generated image is larger than the {max_bytes} byte download limit")
                    chunks.append(chunk)
                return b"".join(chunks)
    except TimeoutError:
        raise UpstreamError(f"downloading the generated image took longer than {timeout_s:g} s",
                            status=504, code="timeout") from None
    except aiohttp.ClientError as e:
        raise UpstreamError(f"could not download the generated image ({type(e).__name__})") from None
