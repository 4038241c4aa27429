"""A fake OpenAI images upstream built to be far faster than anything measured against it.

Raw asyncio protocol on uvloop with the C HTTP parser from httptools (no framework), one
process per core by default, all bound to the same port with SO_REUSEPORT so the kernel
spreads connections across them. Every answer is a precomputed byte string.

    python bench/fake_upstream.py --port 8001 [--procs 2] [--delay 1.0]

Routes: `POST .../images/generations` answers `{"created":..,"data":[{"b64_json":<1x1 PNG>}]}`;
`GET /health` (and `GET /v1/models`) answer 200; anything else 404 in OpenAI's error shape.
`--delay S` holds every image answer for S seconds (a slow upstream, for in-flight figures).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import struct
import sys
import time
import zlib
from typing import cast

import httptools


def tiny_png() -> bytes:
    """A valid 1x1 transparent PNG, built by hand so the fake needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 6, 0, 0, 0)
    pixels = zlib.compress(b"\x00\x00\x00\x00\x00")
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


def _response(status: str, body: bytes, keep_alive: bool) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


_IMAGE_BODY = json.dumps(
    {"created": int(time.time()), "data": [{"b64_json": base64.b64encode(tiny_png()).decode()}]},
    separators=(",", ":"),
).encode()
_OK_BODY = b'{"status":"ok","object":"list","data":[]}'
_404_BODY = b'{"error":{"message":"not found","type":"invalid_request_error","code":"not_found"}}'

# (kind, keep_alive) -> full response bytes
_RESPONSES: dict[tuple[str, bool], bytes] = {}
for _keep in (True, False):
    _RESPONSES["image", _keep] = _response("200 OK", _IMAGE_BODY, _keep)
    _RESPONSES["ok", _keep] = _response("200 OK", _OK_BODY, _keep)
    _RESPONSES["404", _keep] = _response("404 Not Found", _404_BODY, _keep)


class FakeOpenAIProtocol(asyncio.Protocol):
    """One connection: parse requests with httptools, answer each from the table above."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0]
        keep = self.parser.should_keep_alive()
        if method == b"POST" and path.endswith(b"/images/generations"):
            kind = "image"
        elif method == b"GET" and path in (b"/health", b"/v1/models", b"/models", b"/"):
            kind = "ok"
        else:
            kind = "404"
        payload = _RESPONSES[kind, keep]
        if kind == "image" and self.delay_s > 0:
            asyncio.get_running_loop().call_later(self.delay_s, self._send, payload, keep)
        else:
            self._send(payload, keep)

    def _send(self, payload: bytes, keep: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(payload)
        if not keep:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # still correct on plain asyncio, only slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def serve(host: str, port: int, delay_s: float) -> None:
    """Serve in this process until SIGTERM/SIGINT."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(lambda: FakeOpenAIProtocol(delay_s), host, port, reuse_port=True, backlog=4096)
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()
        loop.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True, help="a fixed port (SO_REUSEPORT needs one)")
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="processes sharing the port")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each image answer")
    args = ap.parse_args(argv)

    children: list[int] = []
    for _ in range(max(args.procs, 1) - 1):
        pid = os.fork()
        if pid == 0:
            serve(args.host, args.port, args.delay)
            os._exit(0)
        children.append(pid)
    try:
        serve(args.host, args.port, args.delay)
    finally:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    sys.exit(0)


if __name__ == "__main__":
    main()
