"""The real gateway app in this process: built from a Config, its lifespan run, requests sent through
httpx.ASGITransport (no socket, no process start). For request/response logic; lifecycle tests (start,
stop, restart, reload, crash) start real processes (tests/gateway.py).

The app runs on its own event loop in a background thread, so plain (synchronous) tests, hypothesis
ones and threaded ones included, drive it like a real gateway: `gw.http` is a synchronous httpx client
and `gw.openai()` the official SDK, both over a transport that hands each request to that loop. The
surface matches GatewayProcess (`url`, `base_url`, `seen`, `remember`, `logs`, `assert_secret_absent`),
so a test moves in-process by swapping the fixture. Log records are kept for the key-hygiene check.

Responses are whole (ASGITransport buffers the body): a test that reads a stream as it arrives, or
drops the connection mid-response, needs a real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import httpx2
import openai
from starlette.applications import Starlette

from image_gateway.app import build_app
from image_gateway.config import load_config
from image_gateway.core.settings import Config

T = TypeVar("T")
HOST = "gateway.test"

# Quiet defaults a test process wants: no file watcher thread, no GC retuning of the test process.
_DEFAULT_ENV = {"CONFIG_WATCH": "0", "GC_GEN0_THRESHOLD": "0"}


def config(workdir: Path, env: Mapping[str, str] | None = None, config_yaml: str | None = None) -> Config:
    """What `image-gateway serve` would load from exactly this environment (no os.environ, no `.env`)
    and YAML text (written to workdir/gateway.yaml)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = None
    if config_yaml is not None:
        path = workdir / "gateway.yaml"
        path.write_text(config_yaml)
    environ = {"DATA_DIR": str(workdir / "data"), **_DEFAULT_ENV, **(env or {})}
    return load_config(environ, path, env_file=None)


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Every field (extras included) and the traceback: a key must be in none of them.
        text = f"{record.levelname} {record.name} {record.getMessage()} {record.__dict__!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


async def _send(asgi: httpx.ASGITransport, method: str, url: str, headers: list[tuple[bytes, bytes]],
                body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    # Only the app's own address goes in: another host's URL (an upstream's) is not the app's to answer.
    assert httpx.URL(url).host == HOST, f"{url} is not the in-process gateway ({InProcessGateway.url}); use httpx"
    r = await asgi.handle_async_request(httpx.Request(method, url, headers=headers, content=body))
    raw = b"".join([chunk async for chunk in r.aiter_raw()])
    return r.status_code, r.headers.raw, raw


class _Bridge(httpx.BaseTransport):
    """A synchronous transport that runs each request through the app's ASGITransport on the gateway's
    loop and returns the whole response."""

    def __init__(self, gw: InProcessGateway) -> None:
        self.gw = gw
        self.asgi = httpx.ASGITransport(app=gw.app)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        status, headers, raw = self.gw.run(_send(
            self.asgi, request.method, str(request.url), list(request.headers.raw), request.read()))
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(raw), request=request)


class _Bridge2(httpx2.BaseTransport):
    """The same for the SDK, which speaks httpx2."""

    def __init__(self, gw: InProcessGateway) -> None:
        self.gw = gw
        self.asgi = httpx.ASGITransport(app=gw.app)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        status, headers, raw = self.gw.run(_send(
            self.asgi, request.method, str(request.url), list(request.headers.raw), request.read()))
        return httpx2.Response(status, headers=headers, stream=httpx2.ByteStream(raw), request=request)


class InProcessGateway:
    """`env` is the whole environment the config sees (nothing from os.environ or a .env file)."""

    url = f"http://{HOST}"
    base_url = url + "/v1"

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, config_yaml: str | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.cfg = config(workdir, env, config_yaml)
        self.app = build_app(self.cfg)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="inprocess-gateway")
        self._stack = contextlib.AsyncExitStack()
        self._log = _Keep()
        self._level = logging.NOTSET
        self.seen: list[str] = []  # every response's headers and body, for the key-hygiene check
        self.http = httpx.Client(transport=_Bridge(self), base_url=self.url, timeout=30,
                                 event_hooks={"response": [self._keep]})

    def start(self) -> InProcessGateway:
        lg = logging.getLogger("image_gateway")
        self._level = lg.level
        lg.setLevel(logging.DEBUG)  # every record reaches the key-hygiene check, as the process's log would
        lg.addHandler(self._log)
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        starlette = self.app.starlette
        assert isinstance(starlette, Starlette)
        await self._stack.enter_async_context(starlette.router.lifespan_context(starlette))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        lg = logging.getLogger("image_gateway")
        lg.removeHandler(self._log)
        lg.setLevel(self._level)

    def __enter__(self) -> InProcessGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the gateway's loop; a hang fails after `timeout` instead of blocking the suite."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _keep(self, r: httpx.Response | httpx2.Response) -> None:
        self.seen.append(f"{r.headers}\n{r.read().decode(errors='replace')}")

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        return self.http.request(method, url, **kw)

    def openai(self, api_key: str = "unused", **kw: Any) -> openai.OpenAI:
        """The official SDK talking to this app (no retries unless asked), its responses kept too."""
        kw.setdefault("max_retries", 0)
        client = httpx2.Client(transport=_Bridge2(self), timeout=30, event_hooks={"response": [self._keep]})
        return openai.OpenAI(base_url=self.base_url, api_key=api_key, http_client=client, **kw)

    def remember(self, *texts: Any) -> None:
        for t in texts:
            self.seen.append(t if isinstance(t, str) else repr(t))

    def logs(self) -> str:
        return "\n".join(self._log.lines)

    def assert_secret_absent(self, *secrets: str, extra_texts: Iterable[str] = ()) -> None:
        """No key in any response seen, any log record, or any file under the work dir (data, sqlite...)
        but the config file, which names keys as ${VAR} only."""
        blobs = [self.logs(), *self.seen, *extra_texts]
        files = [p for p in _files(self.workdir) if p.name != "gateway.yaml"]
        for secret in secrets:
            assert secret, "empty secret"
            for text in blobs:
                assert secret not in text, f"secret {secret[:6]}... leaked into a log line or a response"
            for f in files:
                assert secret.encode() not in f.read_bytes(), f"secret {secret[:6]}... leaked into {f}"


def _files(root: Path) -> Iterator[Path]:
    for d, _dirs, names in os.walk(root):
        for name in names:
            yield Path(d) / name
