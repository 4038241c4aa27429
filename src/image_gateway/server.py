"""uvicorn's httptools protocol with a request-header timeout and a connection cap.

uvicorn has neither: its only timer is the keep-alive one, armed after a response, so a client
that opens a connection and sends nothing, or half a request's headers (slowloris), holds it
forever; and its `--limit-concurrency` answers a plain-text 503. Here:

- A connection must finish each request's headers within `header_timeout_s` of its first byte
  (of the connection opening, for the first request), else it is closed. Per request that costs
  one `loop.time()` and two attribute writes; a single sweeper per process, a few times per
  timeout, closes the late ones (a timer per request would be a heap push and cancel each).
- Header bytes are capped at `MAX_HEADER_BYTES` (httptools itself has no limit): 431, closed.
- Past `max_connections` open connections (or as many requests running), a request is answered
  with an OpenAI-shaped 503 and its connection closed, while the ones already open go on.
  That is `--limit-concurrency` with the gateway's error shape.

`configure()` is called by the app factory in each worker process, from the Config.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import metrics
from .api.errors import error_body

log = logging.getLogger("image_gateway.server")

MAX_HEADER_BYTES = 64 * 1024  # request line and headers; nginx's default allows 32 KiB, Node's 16 KiB

_OVERLOADED = error_body("The gateway is at its connection limit (MAX_CONNECTIONS); retry shortly.",
                         "server_error", "server_overloaded")
_TOO_LARGE = error_body(f"Request headers are larger than {MAX_HEADER_BYTES} bytes.",
                        "invalid_request_error", "headers_too_large")


async def _overloaded(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(_OVERLOADED)).encode()),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _OVERLOADED})


class GatewayProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0  # 0 = no timeout
    max_connections: int = 2048
    _started: asyncio.AbstractEventLoop | None = None  # the loop the sweeper and gauge were set up on

    @classmethod
    def configure(cls, header_timeout_s: float, max_connections: int) -> None:
        cls.header_timeout_s = header_timeout_s
        cls.max_connections = max_connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Waiting for a request's headers since (loop time), or None while a request runs / keep-alive
        # idles (uvicorn's own keep-alive timeout covers that).
        self.waiting_since: float | None = self.loop.time()
        self.header_bytes = 0
        if GatewayProtocol._started is not self.loop:
            GatewayProtocol._started = self.loop
            connections = self.connections
            metrics.OPEN_CONNECTIONS.set_function(lambda: len(connections))
            if self.header_timeout_s > 0:
                _sweep(self.loop, connections)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Headers still incomplete after this chunk: it was all headers (checked after parsing, so
        # a chunk that also carries the body is not counted as headers). httptools has no limit.
        if self.waiting_since is not None:
            self.header_bytes += len(data)
            if self.header_bytes > MAX_HEADER_BYTES and not self.transport.is_closing():
                self._refuse_headers()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.waiting_since is None:  # a keep-alive connection's next request
            self.waiting_since = self.loop.time()

    def on_headers_complete(self) -> None:
        self.waiting_since = None
        self.header_bytes = 0
        cap = self.max_connections
        if len(self.connections) > cap or len(self.tasks) >= cap:
            metrics.OVER_CAPACITY.inc()
            self.app = _overloaded  # this request only; uvicorn reads self.app in the call below
            try:
                super().on_headers_complete()
            finally:
                self.app = self.config.loaded_app
            return
        super().on_headers_complete()

    def _refuse_headers(self) -> None:
        self.waiting_since = None
        metrics.HEADERS_REFUSED.labels("too_large").inc()
        self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                             b"content-length: " + str(len(_TOO_LARGE)).encode() + b"\r\nconnection: close\r\n\r\n"
                             + _TOO_LARGE)
        self.transport.close()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Close connections still without complete headers after the timeout; reschedule itself."""
    timeout = GatewayProtocol.header_timeout_s
    deadline = loop.time() - timeout
    for conn in list(connections):
        since = getattr(conn, "waiting_since", None)
        if since is not None and since <= deadline and not conn.transport.is_closing():
            conn.waiting_since = None
            metrics.HEADERS_REFUSED.labels("timeout").inc()
            conn.transport.close()
    loop.call_later(min(1.0, timeout / 4), _sweep, loop, connections)
