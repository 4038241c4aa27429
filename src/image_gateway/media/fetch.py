"""Downloading an image behind a URL, with a size cap and a time limit.

Upstream-returned URLs use the shared download session. Caller-supplied URLs (`fetch_caller_image`)
go through the egress policy (media/egress.py): a guarded session, and redirects followed by hand,
each hop checked, at most MAX_REDIRECTS of them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

import aiohttp
from yarl import URL

from ..errors import InvalidRequest, UpstreamError
from .egress import MAX_REDIRECTS, EgressPolicy, EgressRefused, guarded_session, refusal, refused_by_policy

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def decode_data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or ";base64" not in head:
        raise ValueError("not a base64 data URL")
    try:
        return base64.b64decode(payload, validate=False)
    except binascii.Error as e:
        raise ValueError("invalid base64 in data URL") from e


async def fetch_image(session: aiohttp.ClientSession, url: str, max_bytes: int, timeout_s: float,
                      policy: EgressPolicy | None = None) -> bytes:
    """The bytes behind an image URL (http(s) or data:). Raises UpstreamError with a clear message.
    With `policy` (and a session from egress.guarded_session) every hop is checked; a refusal
    raises EgressRefused."""
    if url.startswith("data:"):
        try:
            return decode_data_url(url)
        except ValueError as e:
            raise UpstreamError(f"upstream returned an unusable image: {e}") from None
    try:
        async with asyncio.timeout(timeout_s):  # one budget for every hop
            if policy is None:
                async with session.get(url) as resp:
                    return await _body(resp, max_bytes, "the generated image")
            for _ in range(MAX_REDIRECTS + 1):
                policy.screen(url)  # IP literals: they never reach the session's resolver
                async with session.get(url, allow_redirects=False) as resp:
                    location = resp.headers.get("Location")
                    if resp.status not in _REDIRECTS or not location:
                        return await _body(resp, max_bytes, "the image")
                    url = str(resp.url.join(URL(location)))
            raise UpstreamError(f"the image URL redirected more than {MAX_REDIRECTS} times")
    except TimeoutError:
        raise UpstreamError(f"downloading the {'generated ' if policy is None else ''}image took longer than "
                            f"{timeout_s:g} s",
                            status=504, code="timeout") from None
    except aiohttp.ClientError as e:
        refused = refused_by_policy(e)
        if refused is not None:
            raise refused from None
        what = "the generated image" if policy is None else "the image"
        raise UpstreamError(f"could not download {what} ({type(e).__name__})") from None
    except ValueError:  # yarl: a redirect to something that is not a URL
        raise UpstreamError("the image URL redirected to an invalid URL") from None


async def _body(resp: aiohttp.ClientResponse, max_bytes: int, what: str) -> bytes:
    if resp.status != 200:
        raise UpstreamError(f"could not download {what} (HTTP {resp.status})")
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise UpstreamError(f"{what[4:]} is larger than the {max_bytes} byte download limit")
    chunks, total = [], 0
    async for chunk in resp.content.iter_chunked(1 << 16):
        total += len(chunk)
        if total > max_bytes:
            raise UpstreamError(f"{what[4:]} is larger than the {max_bytes} byte download limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_caller_image(url: str, param: str, policy: EgressPolicy, max_bytes: int,
                             timeout_s: float) -> bytes:
    """A caller-supplied image URL, fetched under the egress policy. A refusal (a redirect to an
    internal host, a name that now resolves to one) is a 400 naming `param`."""
    if url.startswith("data:"):
        try:
            return decode_data_url(url)
        except ValueError as e:
            raise InvalidRequest(f"'{param}' is not a usable data URL: {e}", param=param) from None
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s)
    try:
        async with guarded_session(lambda: policy, timeout) as session:
            return await fetch_image(session, url, max_bytes, timeout_s, policy)
    except EgressRefused as e:
        raise refusal(param, e) from None
