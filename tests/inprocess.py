"""The real gateway app in this process: built from a Config, its lifespan run, requests sent through
httpx.ASGITransport (no socket, no process start).

The app runs on its own event loop in a background thread, so plain (synchronous) tests, hypothesis
ones included, can drive it one request at a time; its log records are kept for key-hygiene checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx

from image_gateway.app import build_app
from image_gateway.config import load_config

T = TypeVar("T")


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


class InProcessGateway:
    """`env` is the whole environment the config sees (nothing from os.environ or a .env file)."""

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, config_yaml: str | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = workdir / "data"
        path = None
        if config_yaml is not None:
            path = workdir / "gateway.yaml"
            path.write_text(config_yaml)
        self.cfg = load_config({"DATA_DIR": str(self.data_dir), **(env or {})}, path, None)
        self.app = build_app(self.cfg)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="inprocess-gateway")
        self._stack = contextlib.AsyncExitStack()
        self._log = _Keep()
        self.client: httpx.AsyncClient | None = None
        self.seen: list[str] = []  # response texts, for the key-hygiene check

    def start(self) -> InProcessGateway:
        logging.getLogger("image_gateway").addHandler(self._log)
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        starlette = self.app.starlette
        await self._stack.enter_async_context(starlette.router.lifespan_context(starlette))
        self.client = await self._stack.enter_async_context(httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway.test", timeout=30))

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run(self._stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        logging.getLogger("image_gateway").removeHandler(self._log)

    def run(self, coro: Awaitable[T], timeout: float = 30.0) -> T:
        """Run a coroutine on the gateway's loop; a hang fails after `timeout` instead of blocking the suite."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        assert self.client is not None, "start() first"
        r = self.run(self.client.request(method, url, **kw))
        self.seen.append(r.text)
        return r

    def logs(self) -> str:
        return "\n".join(self._log.lines)

    def assert_secret_absent(self, secrets: Iterable[str]) -> None:
        """No key in any response seen, any log record, or any file under the work dir (data, sqlite...)."""
        blobs = [self.logs(), *self.seen]
        files = [Path(root) / f for root, _dirs, names in os.walk(self.workdir) for f in names]
        for secret in secrets:
            assert secret, "empty secret"
            for text in blobs:
                assert secret not in text, f"secret {secret[:6]}... leaked into a log line or a response"
            for f in files:
                assert secret.encode() not in f.read_bytes(), f"secret {secret[:6]}... leaked into {f}"
