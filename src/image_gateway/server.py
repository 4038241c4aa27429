"""uvicorn's httptools protocol with a request-header timeout and a connection cap.

uvicorn has neither: its only timer is the keep-alive one, armed after a response, so a client
that opens a connection and sends nothing, or half a request's headers (slowloris), holds it
forever; and its `--limit-concurrency` answers a plain-text 503. Here:

- A connection must finish each request's headers within `header_timeout_s` of its first byte
  (of the connection opening, for the first request), else it is closed. One sweeper per process,
  four times per timeout (at most once a second), finds the late ones from uvicorn's own state;
  the per-request path pays nothing for it (a timer per request would be a heap push and cancel).
- Header bytes are capped at `MAX_HEADER_BYTES` (httptools itself has no limit): 431, closed.
- Past `max_connections` open connections (or as many requests running), a request is answered
  with an OpenAI-shaped 503 and its connection closed, while the ones already open go on.
  That is `--limit-concurrency` with the gateway's error shape.

`configure()` is called by the app factory in each worker process, from the Config.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import metrics
from .api.errors import error_body

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


# Per-connection notes live here, not on the protocol: uvicorn's protocol already has 28 instance
# attributes, and past 30 CPython stops sharing the instance dict's keys, which made every attribute
# access of uvicorn's per-request code slower (+3% instructions in the protocol layer, callgrind).
_partial_headers: dict[Any, tuple[Any, int]] = {}  # connection -> (cycle the bytes follow, bytes so far)
_waits: dict[Any, tuple[Any, float]] = {}  # the sweeper's: connection -> (cycle the wait follows, first seen)


class GatewayProtocol(HttpToolsProtocol):
    header_timeout_s: float = 10.0  # 0 = no timeout
    max_connections: int = 2048
    _started: asyncio.AbstractEventLoop | None = None  # the loop the sweeper and gauge were set up on

    @classmethod
    def configure(cls, header_timeout_s: float, max_connections: int) -> None:
        cls.header_timeout_s = header_timeout_s
        cls.max_connections = max_connections

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        HttpToolsProtocol.connection_made(self, transport)
        if GatewayProtocol._started is not self.loop:
            GatewayProtocol._started = self.loop
            connections = self.connections
            metrics.OPEN_CONNECTIONS.set_function(lambda: len(connections))
            if self.header_timeout_s > 0:
                _sweep(self.loop, connections)

    def connection_lost(self, exc: Exception | None) -> None:
        _partial_headers.pop(self, None)
        _waits.pop(self, None)
        HttpToolsProtocol.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        # The one override on the per-request path (each costs a Python call): the cap is checked
        # here, before the parser sees the chunk, rather than in on_headers_complete.
        cap = self.max_connections
        if len(self.connections) > cap or len(self.tasks) >= cap:
            self._feed_overloaded(data)
        else:
            HttpToolsProtocol.data_received(self, data)
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            # No request started by this chunk: it was (part of) the next request's headers, which
            # httptools buffers without limit. Counted after parsing, so a body is never counted.
            self._count_header_bytes(cycle, len(data))

    def _count_header_bytes(self, cycle: Any, n: int) -> None:
        seen = _partial_headers.get(self)
        total = n if seen is None or seen[0] is not cycle else seen[1] + n
        _partial_headers[self] = (cycle, total)
        if total > MAX_HEADER_BYTES and not self.transport.is_closing():
            metrics.HEADERS_REFUSED.labels("too_large").inc()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: " + str(len(_TOO_LARGE)).encode()
                                 + b"\r\nconnection: close\r\n\r\n" + _TOO_LARGE)
            self.transport.close()

    def _feed_overloaded(self, data: bytes) -> None:
        """Parse as usual, but a request whose headers complete now is answered 503 (and closed)."""
        before = self.cycle
        self.app = _overloaded  # uvicorn reads self.app when the headers are complete
        try:
            HttpToolsProtocol.data_received(self, data)
        finally:
            self.app = self.config.loaded_app
        if self.cycle is not before:  # a request (or more, pipelined) got the 503
            metrics.OVER_CAPACITY.inc()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set[Any]) -> None:
    """Close connections that have waited too long for a request's headers; reschedule itself.

    Waiting is read off uvicorn's own state, so requests pay nothing for it: no request running
    (no cycle yet, or the last one answered) and no keep-alive timer (uvicorn's, armed after a
    response, cancelled by the first byte of the next request). A wait is told apart from the next
    one by the cycle it follows; it counts from the first sweep that sees it (so the close comes
    between `header_timeout_s` and one sweep interval later).
    """
    global _waits
    timeout = GatewayProtocol.header_timeout_s
    now = loop.time()
    waits: dict[Any, tuple[Any, float]] = {}
    for conn in list(connections):
        if not isinstance(conn, GatewayProtocol):
            continue  # another protocol in the set (none today: cli.py turns WebSockets off)
        cycle = conn.cycle
        if (cycle is not None and not cycle.response_complete) or conn.timeout_keep_alive_task is not None \
                or conn.transport.is_closing():
            continue  # a request running, or idle under uvicorn's keep-alive timeout
        seen = _waits.get(conn)
        if seen is None or seen[0] is not cycle:
            waits[conn] = (cycle, now)
        elif now - seen[1] >= timeout:
            metrics.HEADERS_REFUSED.labels("timeout").inc()
            conn.transport.close()
        else:
            waits[conn] = seen
    _waits = waits
    loop.call_later(min(1.0, timeout / 4), _sweep, loop, connections)
