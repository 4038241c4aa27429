"""Shared plumbing for the fake upstreams: a real aiohttp server on 127.0.0.1 in its own thread.

Every fake records what it received (method, path, headers, body) so tests can check what the
gateway forwarded, and accepts queued faults so tests can inject failures one request at a time.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

T = TypeVar("T")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, list[str]] = field(default_factory=dict)
    # field name -> [(filename, content type, data)]
    files: dict[str, list[tuple[str, str, bytes]]] = field(default_factory=dict)
    raw: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)  # what the fake's handler derived (counts, flags)


@dataclass
class Fault:
    """One injected answer. `match` is a path substring; empty matches every path."""

    status: int = 500
    body: Any = None  # dict/list -> JSON, str/bytes -> raw
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    drop: bool = False  # close the connection without an answer
    match: str = ""
    content_type: str = "application/json"
    passthrough: bool = False  # after delay_s, fall through to the normal handler (a "slow" upstream)


class FakeState:
    """Thread-safe enough for tests: the server thread appends, the test thread reads."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self.delay_s = 0.0
        # While set and not yet released, requests wait in the fake (a test holds several in flight at once).
        self.hold: threading.Event | None = None
        self.bad_keys: set[str] = {"sk-bad"}  # API keys a fake rejects with 401
        self.stream_gap_s = 0.05  # pause between streamed events, so relaying can be told from buffering
        self.lock = threading.Lock()

    def clear(self) -> None:
        """Recorded requests and queued faults dropped, no delay: where each fake's reset() starts."""
        with self.lock:
            self.requests.clear()
            self.faults.clear()
        self.delay_s = 0.0

    def fail_next(self, *faults: Fault) -> None:
        with self.lock:
            self.faults.extend(faults)

    def take_fault(self, path: str) -> Fault | None:
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.match in path:
                    return self.faults.pop(i)
        return None

    def paths(self) -> list[str]:
        return [r.path for r in self.requests]

    def count(self, path_part: str) -> int:
        return sum(1 for r in self.requests if path_part in r.path)


async def record(request: web.Request, state: FakeState) -> Recorded:
    rec = Recorded(request.method, request.path, {k.lower(): v for k, v in request.headers.items()})
    ctype = request.content_type
    if ctype.startswith("multipart/"):
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue
            name = part.name or ""
            if part.filename is not None:
                data = await part.read(decode=False)
                ctype_part = part.headers.get("Content-Type", "application/octet-stream")
                rec.files.setdefault(name, []).append((part.filename, ctype_part, bytes(data)))
            else:
                rec.form.setdefault(name, []).append(await part.text())
    else:
        rec.raw = await request.read()
        if rec.raw and "json" in ctype:
            try:
                rec.json = json.loads(rec.raw)
            except ValueError:
                rec.json = None
    with state.lock:
        state.requests.append(rec)
    return rec


async def apply_fault(request: web.Request, state: FakeState) -> web.StreamResponse | None:
    """Answer with the next matching injected fault, if any."""
    fault = state.take_fault(request.path)
    if fault is None:
        if state.delay_s:
            await asyncio.sleep(state.delay_s)
        if state.hold is not None:  # (released from the test's thread: waited for off the loop)
            await asyncio.to_thread(state.hold.wait, 30)
        return None
    if fault.delay_s:
        await asyncio.sleep(fault.delay_s)
    if fault.passthrough:
        return None
    if fault.drop:
        transport = request.transport
        if transport is not None:
            transport.close()
        raise asyncio.CancelledError
    if isinstance(fault.body, (dict, list)):
        return web.json_response(fault.body, status=fault.status, headers=fault.headers)
    body = fault.body.encode() if isinstance(fault.body, str) else (fault.body or b"")
    return web.Response(
        body=body, status=fault.status, headers=fault.headers, content_type=fault.content_type
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def recording_middleware(state: FakeState) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        rec = await record(request, state)
        request["rec"] = rec
        faulted = await apply_fault(request, state)
        if faulted is not None:
            return faulted
        return await handler(request)

    return mw


class FakeServer:
    """Runs an aiohttp app on 127.0.0.1:<free port> in a background thread.

    Use as a context manager or call start()/stop(). `url` is the base URL (no trailing slash).
    """

    def __init__(self, app: web.Application, state: FakeState, port: int = 0) -> None:
        self.app = app
        self.state = state
        self.port = port
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    def start(self) -> FakeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the server's loop from the test thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(app: web.Application, port: int) -> None:
    """CLI entry for running a fake by hand or from bench/."""
    web.run_app(app, host="127.0.0.1", port=port, access_log=None)
