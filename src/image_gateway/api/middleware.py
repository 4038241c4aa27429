"""One pure-ASGI middleware: request id, the access-log line, and a last-resort error answer."""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import metrics
from .errors import error_body

log = logging.getLogger("image_gateway.access")
errlog = logging.getLogger("image_gateway.error")
_RID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


class RequestContext:
    """Sets scope["state"]["request_id"], adds X-Request-ID, logs one JSON line per request."""

    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = None
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                cand = v.decode("latin-1")
                rid = cand if _RID.match(cand) else None
                break
        rid = rid or os.urandom(12).hex()
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

        try:
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
            if self.access_log:
                extra = {"request_id": rid, "method": scope["method"], "path": scope["path"], "status": status,
                         "ms": round((time.perf_counter() - start) * 1000, 2)}
                for k in ("route", "provider", "deployment", "attempts", "upstream_ms", "idempotency"):
                    if k in state:
                        extra[k] = state[k]
                log.info("request", extra=extra)
