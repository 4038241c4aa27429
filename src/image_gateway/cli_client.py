"""The CLI's way to a gateway: a running one over HTTP (`--url`), or this configuration in-process.

In-process, the gateway's own ASGI app is built from the local configuration and driven through
httpx's ASGITransport, its lifespan (task store, pollers) run here for the life of the command, so
both ways take the same code path as any other client. Also: SSE parsing and error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import msgspec

from .core.settings import Config

IN_PROCESS = "http://in-process"  # the base URL the in-process app sees


class CommandError(Exception):
    """What the command prints (as `error: ...`) before it exits with status 1."""


@dataclass(frozen=True)
class Target:
    url: str | None  # None: in-process
    key: str | None = None  # Authorization: Bearer (a gateway key, or your own provider key)
    provider_key: str | None = None  # X-Provider-Key
    timeout_s: float = 900.0

    def headers(self, bearer: str | None = None) -> dict[str, str]:
        out = {"User-Agent": "image-gateway-cli"}
        token = bearer or self.key
        if token:
            out["Authorization"] = f"Bearer {token}"
        if self.provider_key:
            out["X-Provider-Key"] = self.provider_key
        return out


@contextlib.asynccontextmanager
async def _lifespan(app: Any) -> AsyncIterator[None]:
    """Run an ASGI app's lifespan (startup before the first request, shutdown after the last)."""
    to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def send(message: dict[str, Any]) -> None:
        await from_app.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, to_app.get, send))
    await to_app.put({"type": "lifespan.startup"})
    started = await from_app.get()
    if started["type"] != "lifespan.startup.complete":
        raise CommandError(f"the gateway did not start: {started.get('message', started['type'])}")
    try:
        yield
    finally:
        await to_app.put({"type": "lifespan.shutdown"})
        await from_app.get()
        await task


class StreamingASGITransport(httpx.AsyncBaseTransport):
    """httpx's ASGITransport waits for the whole body; this one hands it over as the app sends it, so
    a stream's partial images reach the progress bar as they happen."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": request.method,
                 "scheme": url.scheme, "path": unquote(url.path), "raw_path": url.raw_path.split(b"?", 1)[0],
                 "query_string": url.query, "root_path": "",
                 "headers": [(k.lower(), v) for k, v in request.headers.raw],
                 "server": (url.host, url.port or 80), "client": ("127.0.0.1", 0), "state": {}}
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        started: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        gone = asyncio.Event()
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.set_result(message)
            elif message["type"] == "http.response.body":
                await chunks.put(message.get("body", b""))
                if not message.get("more_body", False):
                    await chunks.put(None)

        async def run() -> None:
            try:
                await self.app(scope, receive, send)
            except BaseException as e:
                if not started.done():
                    started.set_exception(e)
                raise
            finally:
                await chunks.put(None)

        task = asyncio.create_task(run())
        start = await started

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self) -> AsyncIterator[bytes]:
                while (chunk := await chunks.get()) is not None:
                    yield chunk

            async def aclose(self) -> None:
                gone.set()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, 10)

        return httpx.Response(start["status"], headers=start.get("headers", []), stream=Body(), request=request)


@contextlib.asynccontextmanager
async def client(target: Target, cfg: Config | None = None, data_dir: Path | None = None
                 ) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the target. In-process needs `cfg`; `data_dir` overrides its DATA_DIR."""
    timeout = httpx.Timeout(target.timeout_s, connect=10.0)
    if target.url is not None:
        async with httpx.AsyncClient(base_url=target.url.rstrip("/"), timeout=timeout, headers=target.headers(),
                                     follow_redirects=True) as c:
            yield c
        return
    assert cfg is not None
    from .app import build_app  # only in-process needs the whole gateway

    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=data_dir, watch_config=False)
    app = build_app(dataclasses.replace(cfg, access_log=False, public_base_url=cfg.public_base_url or IN_PROCESS))
    async with _lifespan(app), httpx.AsyncClient(transport=StreamingASGITransport(app), base_url=IN_PROCESS,
                                                  timeout=timeout, headers=target.headers()) as c:
        yield c


def error_text(status: int, body: bytes) -> str:
    """An OpenAI-shaped error body → one line: the message, its code and status."""
    try:
        err = msgspec.json.decode(body).get("error") or {}
    except (msgspec.DecodeError, AttributeError):
        err = {}
    if isinstance(err, dict) and err.get("message"):
        code = f"{err['code']}, " if err.get("code") else ""
        return f"{err['message']} ({code}HTTP {status})"
    return f"the gateway answered HTTP {status}: {body[:200].decode(errors='replace')}"


async def check(resp: httpx.Response) -> httpx.Response:
    if resp.status_code >= 400:
        raise CommandError(error_text(resp.status_code, await resp.aread()))
    return resp


@dataclass(slots=True)
class Event:
    name: str  # the `event:` field ("message" when absent), or "comment"
    data: str


async def sse(resp: httpx.Response) -> AsyncIterator[Event]:
    """Server-sent events of a streamed response; comments (`: progress 40%`) as Event("comment", text)."""
    name, data = "message", list[str]()
    async for line in resp.aiter_lines():
        if not line:
            if data:
                yield Event(name, "\n".join(data))
            name, data = "message", []
        elif line.startswith(":"):
            yield Event("comment", line[1:].strip())
        elif line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if data:
        yield Event(name, "\n".join(data))


def transport_error(target: Target, e: httpx.HTTPError) -> CommandError:
    where = target.url or "the in-process gateway"
    if isinstance(e, httpx.TimeoutException):
        return CommandError(f"{where} did not answer in time ({type(e).__name__})")
    return CommandError(f"cannot reach {where}: {e or type(e).__name__}")
