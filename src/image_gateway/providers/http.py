"""Upstream HTTP plumbing shared by adapters: one pooled aiohttp session each, error mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
import msgspec

from ..errors import GatewayError, UpstreamError, UpstreamTimeout, scrub


class HttpProvider:
    """The plumbing every HTTP adapter shares: its settings and one pooled session, made lazily
    inside the running loop. Synchronous upstreams keep the default `poll` (never called)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self.base_url: str = settings.base_url
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = new_session(self.settings.timeout_s)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: Any) -> Sequence[Any]:
        raise NotImplementedError(f"{type(self).__name__} is synchronous: nothing to poll")


def new_session(timeout_s: float, limit: int = 512) -> aiohttp.ClientSession:
    """A pooled session; created lazily inside the running loop by each adapter."""
    # One session per upstream host, so a per-host limit would only repeat `limit` (and cost per request).
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300,
                                     enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s)
    # No cookie jar: upstream APIs authenticate with keys, and a jar filters cookies for every
    # request and stores what any upstream sets (state shared between callers we do not want).
    return aiohttp.ClientSession(connector=connector, timeout=timeout, json_serialize=_dumps,
                                 auto_decompress=True, raise_for_status=False, cookie_jar=aiohttp.DummyCookieJar())


def _dumps(obj: Any) -> str:
    return msgspec.json.encode(obj).decode()


def retry_after(headers: Mapping[str, str]) -> dict[str, str]:
    """Retry-After (and the SDK's retry-after-ms) passed back to the caller."""
    out = {}
    for h in ("Retry-After", "retry-after-ms"):
        v = headers.get(h)
        if v:
            out[h] = v
    return out


def error_from_openai_body(status: int, body: bytes, headers: Mapping[str, str], provider: str,
                           secrets: list[str | None]) -> GatewayError:
    """An upstream error answer → our error, keeping OpenAI's shape, status and Retry-After."""
    message, etype, code, param = None, None, None, None
    try:
        data = msgspec.json.decode(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            message, etype, code, param = err.get("message"), err.get("type"), err.get("code"), err.get("param")
        elif isinstance(err, str):
            message = err
        elif isinstance(data, dict):
            message = data.get("message") or data.get("msg") or data.get("description")
    except (msgspec.DecodeError, UnicodeDecodeError):
        pass
    if not message:
        snippet = body[:200].decode("utf-8", "replace").strip()
        # An HTML page (a proxy's or a CDN's) is no use to a caller; a short text body is.
        tail = f": {snippet}" if snippet and not snippet.startswith("<") else ""
        message = f"{provider} upstream answered HTTP {status}{tail}"
    return scrub(GatewayError(
        str(message),
        status=status if 400 <= status < 600 else 502,
        type=str(etype) if etype else ("server_error" if status >= 500 else "invalid_request_error"),
        code=str(code) if code is not None else None,
        param=str(param) if param is not None else None,
        headers=retry_after(headers),
        retryable=status in (408, 409, 429) or status >= 500,
    ), secrets)


def connection_error(exc: BaseException, provider: str) -> GatewayError:
    """Network failures: never echo the exception text blindly (it may carry a URL with a key)."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"{provider} upstream did not answer in time", retryable=False)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(f"{provider} upstream is unreachable (connection failed)", code="upstream_unreachable",
                             retryable=True)
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return UpstreamError(f"{provider} upstream closed the connection before answering",
                             code="upstream_disconnected", retryable=False)
    return UpstreamError(f"{provider} upstream request failed ({type(exc).__name__})", code="upstream_error",
                         retryable=False)
