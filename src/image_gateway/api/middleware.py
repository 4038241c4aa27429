"""The outermost ASGI layer: request id, access log, a last-resort error answer, and the hot routes.

The Images API's POST routes are dispatched here directly (a dict lookup) instead of through
Starlette's router and its exception middlewares: those layers cost about a third of the
gateway's CPU per request on the hot path. Everything else — path parameters, CORS requests
(anything carrying an Origin header), lifespan — goes to the Starlette app inside.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import logs, metrics
from ..errors import GatewayError, redact
from .errors import error_body, error_response

errlog = logging.getLogger("image_gateway.error")
_RID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")

Handler = Callable[[Request], Awaitable[Response]]

# Request ids need to be unique, not secret: a per-process random prefix and a counter (a getrandom
# syscall per request showed up at a few per cent of the hot path).
_RID_PREFIX = os.urandom(6).hex()
_rid_counter = itertools.count(1)


def _next_request_id() -> str:
    return f"{_RID_PREFIX}{next(_rid_counter):012x}"


class RequestContext:
    """Sets scope["state"]["request_id"], adds X-Request-ID, logs one JSON line per request."""

    def __init__(self, app: ASGIApp, access_log: bool = True, hot: Mapping[tuple[str, str], Handler] | None = None,
                 wrap_hot: Callable[[ASGIApp], ASGIApp] | None = None, starlette: Any = None) -> None:
        self.app = app
        self.access_log = access_log
        self.hot = dict(hot or {})
        self.starlette = starlette or app  # what `request.app` must be for handlers
        self._hot_app = wrap_hot(self._dispatch_hot) if wrap_hot else self._dispatch_hot

    async def _dispatch_hot(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = scope["hot_handler"]
        request = Request(scope, receive)
        try:
            response = await handler(request)
        except GatewayError as e:
            response = error_response(e)
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        has_origin = False
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _RID.match(cand) else None
            elif k == b"origin":
                has_origin = True
        rid = rid or _next_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        start = time.perf_counter()
        status = 0
        started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = message["status"]
                started = True
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        handler = None if has_origin else self.hot.get((scope["method"], scope["path"]))
        try:
            if handler is not None:
                scope["app"] = self.starlette
                scope["hot_handler"] = handler
                await self._hot_app(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception:
            errlog.exception("unhandled error", extra={"request_id": rid})
            if not started:
                status = 500
                await send({"type": "http.response.start", "status": 500,
                            "headers": [(b"content-type", b"application/json"), rid_header]})
                await send({"type": "http.response.body", "body": error_body(
                    "The gateway hit an internal error; it has been logged with this request's id.",
                    "server_error", "internal_error")})
        finally:
            route = state.get("route")
            if route is not None or scope["path"].startswith("/v1/"):
                metrics.count_request(str(route or "-"), status)
            access = logs.access_log
            if self.access_log and access is not None:
                path = scope["path"] if handler is not None else redact(scope["path"])  # hot paths are constants
                access.write(rid, scope["method"], path, status, round((time.perf_counter() - start) * 1000, 2),
                             state)
