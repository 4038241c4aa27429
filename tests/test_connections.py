"""Connection hygiene of the real server: request-header timeout (slowloris), header size, connection cap."""

from __future__ import annotations

import json
import socket
import time

import httpx

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.routing_util import metric
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n"


def _connect(gw: GatewayProcess, timeout: float = 5.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", gw.port), timeout=timeout)
    return s


def _read_response(s: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body (what the gateway sends for these requests)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        assert chunk, f"connection closed before a response: {buf!r}"
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = s.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _seconds_until_closed(s: socket.socket) -> float:
    """Blocks until the server closes the connection (recv returns b''); the socket's timeout is the deadline."""
    t0 = time.monotonic()
    while True:
        try:
            data = s.recv(65536)
        except ConnectionResetError:  # closed with our unread bytes still in its buffer
            data = b""
        if not data:
            return time.monotonic() - t0


UPSTREAM_KEY = "sk-upstream-conn-key-0123456789"


def test_slowloris_connection_is_closed_after_the_header_timeout(gateway: GatewayFactory,
                                                                 openai_upstream: FakeServer) -> None:
    openai_upstream.state.delay_s = 1.3  # longer than the header timeout
    gw = gateway({"HEADER_TIMEOUT_S": "1", "OPENAI_BASE_URL": openai_upstream.url + "/v1",
                  "OPENAI_API_KEY": UPSTREAM_KEY})
    # Half the headers, then nothing: closed after ~1 s (uvicorn alone would hold it forever).
    slow = _connect(gw)
    slow.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: ")
    idle = _connect(gw)  # connects and sends nothing at all
    waited = _seconds_until_closed(slow)
    assert 0.8 <= waited < 4.0, waited
    assert _seconds_until_closed(idle) < 4.0

    # A keep-alive connection is timed again for its next request's headers.
    ka = _connect(gw)
    ka.sendall(GET_HEALTH)
    assert _read_response(ka)[0] == 200
    ka.sendall(b"GET /health HTTP/1.1\r\nHost:")
    assert 0.8 <= _seconds_until_closed(ka) < 4.0

    # Headers that trickle in but finish within the timeout are served.
    ok = _connect(gw)
    for part in (b"GET /health HTTP/1.1\r\n", b"Host: gw\r\n", b"\r\n"):
        ok.sendall(part)
        time.sleep(0.2)  # the client's own pace, well within the 1 s
    assert _read_response(ok)[0] == 200

    # The timeout is for headers only: a request that runs longer than it is answered.
    r = httpx.post(gw.base_url + "/images/generations", json={"model": "gpt-image-1", "prompt": "a fox"}, timeout=10)
    assert r.status_code == 200, r.text
    gw.remember(r.text, dict(r.headers))
    m = httpx.get(gw.url + "/metrics").text
    assert metric(m, "gateway_connections_closed_headers_total", reason="timeout") >= 3
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_oversized_headers_get_431_and_the_connection_closed(gateway: GatewayFactory) -> None:
    gw = gateway()
    s = _connect(gw)
    # 70 KiB of headers, never finished, in one write (so the server has read all of it when it closes)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\n" + b"X-Big: " + b"a" * 70 * 1024 + b"\r\n")
    status, headers, body = _read_response(s)
    assert status == 431 and headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    assert _seconds_until_closed(s) < 4.0
    # No route speaks WebSocket: an Upgrade request is answered as plain HTTP.
    ws = _connect(gw)
    ws.sendall(b"GET /health HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    assert _read_response(ws)[0] == 200
    # Headers of ordinary size, and a large body after them, are fine.
    assert httpx.get(gw.url + "/health", headers={"X-Ok": "b" * 8000}).status_code == 200
    big = {"model": "demo", "prompt": "x" * 200_000, "size": "64x64"}
    assert httpx.post(gw.base_url + "/images/generations", json=big, timeout=30).status_code != 431


def test_past_the_connection_cap_new_requests_get_503_while_open_ones_go_on(gateway: GatewayFactory) -> None:
    gw = gateway({"MAX_CONNECTIONS": "2", "HEADER_TIMEOUT_S": "30"})
    body = json.dumps({"model": "demo", "prompt": "a held request", "size": "64x64"}).encode()
    held = []
    for _ in range(2):  # two requests in flight: headers sent, half the body, the handler waiting for the rest
        s = _connect(gw, timeout=10)
        s.sendall(b"POST /v1/images/generations HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
        held.append(s)

    over = httpx.get(gw.url + "/health", timeout=5)
    assert over.status_code == 503, over.text
    assert over.headers["content-type"] == "application/json" and over.headers["retry-after"] == "1"
    assert over.headers["connection"] == "close"
    err = over.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "server_overloaded"

    for s in held:  # the held requests finish normally
        s.sendall(body[10:])
        status, _, answer = _read_response(s)
        assert status == 200 and json.loads(answer)["data"]
        s.close()

    def below_cap() -> bool:
        return httpx.get(gw.url + "/health", timeout=5).status_code == 200
    wait_until(below_cap, what="the closed connections to be dropped")
    assert metric(httpx.get(gw.url + "/metrics").text, "gateway_over_capacity_total") >= 1
