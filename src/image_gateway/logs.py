"""JSON log lines, written off the event loop (QueueHandler → a listener thread), keys scrubbed."""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from .errors import redact

_enc = msgspec.json.Encoder()
_STD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__)
_STD |= {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD:
                line[k] = v
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        text = _enc.encode(line).decode()
        return redact(text, self.secrets)


class LineWriter:
    """One thread owns stderr: every line (log records and access-log batches) is written whole, in order."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.q: queue.SimpleQueue[bytes | threading.Event] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> None:
        self.q.put(data)

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            view = memoryview(item)
            while view:
                try:
                    view = view[os.write(self.fd, view):]
                except InterruptedError:
                    continue
                except OSError:
                    break  # stderr gone: drop the line rather than crash

    def drain(self, timeout: float = 5.0) -> None:
        done = threading.Event()
        self.q.put(done)
        done.wait(timeout)


class _LineHandler(logging.Handler):
    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.put(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)


# What the routing layer records in the ASGI scope's state that the access line carries.
STATE_FIELDS = ("route", "provider", "deployment", "attempts", "upstream_ms", "idempotency")


class AccessLog:
    """The one-line-per-request JSON log, built on the event loop without the logging machinery.

    Lines are encoded with msgspec, batched for 250 ms and handed to the writer thread: a request
    pays one small encode and a list append. The lines hold only the gateway's own fields (no
    headers, no bodies), and the path is scrubbed of anything key-shaped.
    """

    def __init__(self, writer: LineWriter) -> None:
        self.writer = writer
        self.buf: list[bytes] = []
        self.scheduled = False
        self._sec = -1
        self._stamp = ""

    def _ts(self, now: float) -> str:
        sec = int(now)
        if sec != self._sec:
            self._sec, self._stamp = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._stamp}.{int((now - sec) * 1000):03d}Z"

    def write(self, request_id: str, method: str, path: str, status: int, ms: float,
              state: Mapping[str, Any]) -> None:
        """One request's line: its own fields, then those of `state` named in STATE_FIELDS."""
        line = {"ts": self._ts(time.time()), "level": "info", "logger": "image_gateway.access", "msg": "request",
                "request_id": request_id, "method": method, "path": path, "status": status, "ms": ms}
        for k in STATE_FIELDS:
            if k in state:
                line[k] = state[k]
        self.buf.append(_enc.encode(line))
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_later(0.25, self.flush)

    def flush(self) -> None:
        self.scheduled = False
        if self.buf:
            data = b"\n".join(self.buf) + b"\n"
            self.buf = []
            self.writer.put(data)


_listener: logging.handlers.QueueListener | None = None
_writer: LineWriter | None = None
access_log: AccessLog | None = None


def setup_logging(level: str, secrets: list[str]) -> None:
    """Route every log record through a queue so writing never blocks the event loop."""
    global _listener, _writer, access_log
    if _listener is not None:
        _listener.stop()
    if _writer is None:
        _writer = LineWriter()
    access_log = AccessLog(_writer)
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = _LineHandler(_writer)
    out.setFormatter(JsonFormatter(secrets))
    _listener = logging.handlers.QueueListener(q, out, respect_handler_level=False)
    _listener.start()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        lg = logging.getLogger(name)
        lg.handlers[:] = []
        lg.propagate = True


def update_secrets(secrets: list[str]) -> None:
    for h in ((_listener.handlers if _listener else ()) or ()):
        fmt = h.formatter
        if isinstance(fmt, JsonFormatter):
            fmt.secrets = secrets


def flush_logging() -> None:
    """Write out every queued line now (at shutdown: uvicorn re-raises SIGTERM right after it)."""
    if access_log is not None:
        access_log.flush()
    if _listener is not None:
        _listener.stop()
        _listener.start()
    if _writer is not None:
        _writer.drain()
