"""Per-key rate limits (requests per minute, concurrent jobs) as one pure-ASGI middleware.

Counted per gateway key; when the gateway has no keys, per the caller's own bearer/provider
key, else per client address. Only POSTs under /v1/ count (image and chat calls, task
submissions); reads such as GET /v1/models and task polling do not. A request holds its
concurrency slot until its response (stream included) has been sent. The counting itself is
routing/limits.py's Limiter (one per Runtime); with REDIS_URL, routing/shared_limits.py's
SharedLimiter, one limit across every gateway process (a key with no limit makes no Redis call).
"""

from __future__ import annotations

import math
import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from .. import metrics
from ..core.settings import KeyLimit
from ..routing.limits import Limiter
from ..routing.shared_limits import SharedLimiter
from ..schemas.responses import encode
from ..state.redis import StateUnavailable


def _caller(scope: Scope, gateway_keys: frozenset[str]) -> str | None:
    token: str | None = None
    provider_key: str | None = None
    for k, v in scope["headers"]:
        if k == b"authorization":
            scheme, _, rest = v.decode("latin-1").partition(" ")
            token = rest.strip() if scheme.lower() == "bearer" else None
        elif k == b"x-provider-key":
            provider_key = v.decode("latin-1")
    if gateway_keys:
        return token if token in gateway_keys else None  # unknown keys are refused by auth, not counted here
    who = token or provider_key
    if who:
        return who
    client = scope.get("client")
    return f"addr:{client[0]}" if client else "anonymous"


class RateLimitMiddleware:
    """Answers 429 with Retry-After (OpenAI's error shape) when a key is over its limit."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._rt: Any = None  # the app's Runtime, looked up once (Starlette's State costs ~0.7 µs a read)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        rt = self._rt
        if rt is None:
            rt = self._rt = scope["app"].state.rt
        cfg = rt.cfg
        limits = cfg.limits
        if not limits.enabled:
            await self.app(scope, receive, send)
            return
        who = _caller(scope, cfg.gateway_keys)
        if who is None:
            await self.app(scope, receive, send)
            return
        lim = limits.for_key(who)
        if rt.shared_limiter is not None:
            await _shared(self.app, scope, receive, send, rt, who, lim)
            return
        limiter: Limiter = rt.limiter
        reason, wait = limiter.acquire(who, lim, time.monotonic())
        if reason is not None:
            await _refuse(send, reason, wait, lim)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            limiter.release(who)


async def _shared(app: ASGIApp, scope: Scope, receive: Receive, send: Send, rt: Any, who: str,
                  lim: KeyLimit) -> None:
    if not (lim.rpm or lim.concurrent):
        await app(scope, receive, send)
        return
    shared: SharedLimiter = rt.shared_limiter
    try:
        reason, wait, slot = await shared.acquire(who, lim)
    except StateUnavailable as e:
        metrics.RATE_LIMITED.labels("state_unavailable").inc()
        body = encode(e.body())
        await send({"type": "http.response.start", "status": e.status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"retry-after", b"1")]})
        await send({"type": "http.response.body", "body": body})
        return
    if reason is not None:
        await _refuse(send, reason, wait, lim)
        return
    try:
        await app(scope, receive, send)
    finally:
        await shared.release(slot)


async def _refuse(send: Send, reason: str, wait_s: float, lim: KeyLimit) -> None:
    metrics.RATE_LIMITED.labels(reason).inc()
    retry = max(1, math.ceil(wait_s))
    if reason == "rpm":
        msg = f"Rate limit reached for this key: {lim.rpm:g} requests per minute. Try again in {retry} s."
        code, extra = "rate_limit_exceeded", [(b"x-ratelimit-limit-requests", str(int(lim.rpm)).encode()),
                                              (b"x-ratelimit-remaining-requests", b"0")]
    else:
        msg = f"Too many concurrent requests for this key (limit {lim.concurrent}). Try again when one finishes."
        code, extra = "concurrency_limit_exceeded", []
    body = encode({"error": {"message": msg, "type": "requests", "param": None, "code": code}})
    await send({"type": "http.response.start", "status": 429, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
