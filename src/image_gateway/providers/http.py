"""Upstream HTTP plumbing shared by adapters, so that an adapter writes only its translation:

* HttpProvider: its settings and one pooled session, made lazily inside the running loop;
  `call()` sends one JSON or multipart request and maps transport errors (and, when asked,
  an error answer) to gateway errors;
* fan_out: `n` images as n parallel calls; poll_each: per-handle polling for upstreams without a
  batch query. (Upstream URLs are re-hosted by the API layer, per the generic `rehost` option.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import aiohttp
import msgspec

from ..core.types import CallContext, PollOutcome
from ..errors import GatewayError, UpstreamError, UpstreamTimeout, scrub
from ..media.session import new_session as _client_session
from .base import ProviderBase

T = TypeVar("T")
_JSON = {"Content-Type": "application/json"}


@dataclass(slots=True)
class Answer:
    """An upstream's answer, read whole."""

    status: int
    body: bytes
    headers: Mapping[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").partition(";")[0].strip().lower()

    def json(self) -> Any:
        """The body as JSON, or None when it is empty or not JSON."""
        if not self.body.strip():
            return None
        try:
            return msgspec.json.decode(self.body)
        except msgspec.DecodeError:
            return None


class HttpProvider(ProviderBase):
    """An adapter with an HTTP upstream at `settings.base_url`."""

    # How error messages name the upstream (never its URL, which may carry a key).
    label: ClassVar[str] = ""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
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

    async def call(self, url: str, ctx: CallContext, *, json: Any = None, data: Any = None,
                   headers: Mapping[str, str] | None = None, errors: bool = False) -> Answer:
        """POST `json` (encoded here) or `data` (bytes, a FormData). Transport failures become
        gateway errors; with `errors=True` an answer >= 400 does too (OpenAI's error shape read)."""
        if json is not None:
            data = msgspec.json.encode(json)
            headers = {**(headers or {}), **_JSON}
        try:
            async with self.session.post(url, data=data, headers=headers) as resp:
                answer = Answer(resp.status, await resp.read(), resp.headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, self.label or self.name) from None
        if errors and answer.status >= 400:
            raise error_from_openai_body(answer.status, answer.body, answer.headers, self.label or self.name,
                                         [ctx.api_key])
        return answer


async def fan_out(calls: Sequence[Awaitable[T]]) -> list[T]:
    """`n` images from an upstream that makes one per call: the calls in parallel, in order."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


async def poll_each(handles: Sequence[dict[str, Any]],
                    one: Callable[[dict[str, Any]], Awaitable[PollOutcome]]) -> list[PollOutcome]:
    """PollingProvider.poll for an upstream without a batch query: each handle on its own, and a
    handle whose task failed gets its GatewayError (returned, not raised)."""
    async def guarded(h: dict[str, Any]) -> PollOutcome:
        try:
            return await one(h)
        except GatewayError as e:
            return e

    return list(await asyncio.gather(*(guarded(h) for h in handles)))


def new_session(timeout_s: float, limit: int = 512) -> aiohttp.ClientSession:
    """A pooled session for one upstream; created lazily inside the running loop by each adapter."""
    # One session per upstream host, so a per-host limit would only repeat `limit` (and cost per request).
    connector = aiohttp.TCPConnector(limit=limit, ttl_dns_cache=300, enable_cleanup_closed=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=timeout_s)
    return _client_session(timeout, connector, json_serialize=_dumps, auto_decompress=True, raise_for_status=False)


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
        message = f"{provider} upstream answered HTTP {status}{body_tail(body)}"
    return scrub(GatewayError(
        str(message),
        status=status if 400 <= status < 600 else 502,
        type=str(etype) if etype else ("server_error" if status >= 500 else "invalid_request_error"),
        code=str(code) if code is not None else None,
        param=str(param) if param is not None else None,
        headers=retry_after(headers),
        retryable=status in (408, 409, 429) or status >= 500,
    ), secrets)


def body_tail(raw: bytes) -> str:
    """`: <the body's start>` for a short text body; "" for none, or for an HTML page (a proxy's or
    a CDN's), which is no use to a caller."""
    snippet = raw[:200].decode("utf-8", "replace").strip()
    return f": {snippet}" if snippet and not snippet.startswith("<") else ""


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
