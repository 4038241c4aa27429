"""The Idempotency-Key header on the HTTP side: fingerprint the request, run it at most once.

The OpenAI SDK sends `Idempotency-Key` on its retries; so may any client. Same key + same body
within `router.idempotency_ttl_s` (24 h) → the same answer (`Idempotent-Replayed: true`), or
the running request's answer when it is still running; same key + another body → 409.
Streaming requests are not deduplicated (an SSE stream can't be replayed as it was).
Answers are scoped to their caller (api/owner.py): another caller sending the same key runs its
own request and never sees the first caller's answer (or task).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from .. import metrics
from ..core.types import ImageRequest
from ..errors import GatewayError, InvalidRequest
from ..runtime import Runtime
from ..schemas.responses import encode
from .body import header
from .idempotency import IdempotencyStore, Stored, key_id
from .idempotency_redis import RedisIdempotencyStore
from .owner import fingerprint as owner_of

_KEEP = ("content-type", "x-gateway-model", "x-gateway-provider", "retry-after")


def fingerprint(path: str, req: ImageRequest) -> str:
    h = hashlib.sha256(path.encode())
    h.update(msgspec.json.encode(req))
    return h.hexdigest()


def idempotency_key(request: Request, req: ImageRequest) -> str | None:
    """The request's Idempotency-Key when it is to be honoured (never for a stream)."""
    key = header(request, b"idempotency-key")
    return key if key and not req.stream else None


async def idempotent(request: Request, rt: Runtime, req: ImageRequest, key: str,
                     produce: Callable[[], Awaitable[Response]]) -> Response:
    """`produce()` at most once per caller, key and body (see above); `key` from `idempotency_key`."""
    if len(key) > 255:
        raise InvalidRequest("Idempotency-Key must be at most 255 characters.", param="Idempotency-Key")
    fp = fingerprint(request.url.path, req)

    async def run() -> Stored:
        resp = await produce()
        headers = {k: v for k, v in resp.headers.items() if k in _KEEP}
        return Stored(fp, resp.status_code, headers, bytes(resp.body))

    def render(e: GatewayError) -> Stored:
        return Stored(fp, e.status, {"content-type": "application/json", **e.headers}, encode(e.body()))

    try:
        store: IdempotencyStore | RedisIdempotencyStore = request.app.state.idempotency
        stored, how = await store.run(key_id(owner_of(request, rt), key), fp, rt.cfg.router.idempotency_ttl_s,
                                      run, render)
    except GatewayError as e:
        metrics.IDEMPOTENCY.labels("conflict" if e.status == 409 else "error").inc()
        raise
    metrics.IDEMPOTENCY.labels(how).inc()
    state = request.scope["state"]
    state["idempotency"] = how
    headers = dict(stored.headers)
    if how != "new":
        headers["Idempotent-Replayed"] = "true"
        if "x-gateway-model" in headers:
            state["route"] = headers["x-gateway-model"]
            state["provider"] = headers.get("x-gateway-provider", "")
    return Response(stored.body, status_code=stored.status, headers=headers)
