"""JSON log lines, written off the event loop (QueueHandler → a listener thread), keys scrubbed."""

from __future__ import annotations

import logging
import logging.handlers
import queue
import sys
import time
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


_listener: logging.handlers.QueueListener | None = None


def setup_logging(level: str, secrets: list[str]) -> None:
    """Route every log record through a queue so writing never blocks the event loop."""
    global _listener
    if _listener is not None:
        _listener.stop()
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    out = logging.StreamHandler(sys.stderr)
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
    if _listener is not None:
        _listener.stop()
        _listener.start()


def stop_logging() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None
