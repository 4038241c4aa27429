"""Errors that end up on the wire as OpenAI's `{"error": {message, type, param, code}}`."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

_KEYLIKE = re.compile(r"\b(sk|gw|mj)-[A-Za-z0-9_\-*.]{6,}")


class ConfigError(ValueError):
    """A configuration that cannot be loaded; the message names the file, the section and the key."""


class GatewayError(Exception):
    """Anything we answer with a non-2xx status. Messages must never contain a key."""

    status = 400
    type = "invalid_request_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool = False,
        capacity: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.param = param
        self.headers = dict(headers or {})
        # Whether another attempt (retry or fallback) could succeed without double-billing.
        self.retryable = retryable
        # A capacity answer says "not now", never "broken" (a 429 other than out-of-credit, a full
        # queue): the router pauses that deployment instead of counting it toward its breaker.
        self.capacity = (self.status == 429 and self.code != "insufficient_quota") if capacity is None else capacity

    def again_after(self, seconds: float) -> GatewayError:
        """A fresh copy of this answer (never raised: no traceback) whose Retry-After is what is left of a
        pause, in whole seconds rounded up."""
        return GatewayError(self.message, status=self.status, type=self.type, code=self.code, param=self.param,
                            headers={"Retry-After": str(math.ceil(max(seconds, 0.0)))},
                            retryable=self.retryable, capacity=self.capacity)

    def body(self) -> dict[str, dict[str, str | None]]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class AuthError(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class UpstreamError(GatewayError):
    """The provider answered with an error, or could not be reached."""

    status = 502
    type = "upstream_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout"
    code = "timeout"


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Remove the given secrets, and anything shaped like a key, from text bound for a client or log."""
    for s in secrets:
        if s and len(s) >= 4:
            text = text.replace(s, "[redacted]")
    return _KEYLIKE.sub(lambda m: m.group(1) + "-[redacted]", text)


def scrub(err: GatewayError, secrets: Iterable[str | None] = ()) -> GatewayError:
    """Redact every string `err` takes to a caller, a log line or a task record (message, type, param,
    code and header values: an upstream can echo a key in any of them), in place; returns `err`."""
    keys = [s for s in secrets if s and len(s) >= 4]
    err.message = redact(err.message, keys)
    err.args = (err.message,)  # str(err), and tracebacks, show args
    err.type = redact(err.type, keys)
    if err.param is not None:
        err.param = redact(err.param, keys)
    if err.code is not None:
        err.code = redact(err.code, keys)
    if err.headers:  # a new dict: a copy.copy()'d error shares the original's
        err.headers = {k: redact(v, keys) for k, v in err.headers.items()}
    return err


def mask_key(key: str | None) -> str:
    """`sk-...abcd`: enough to tell keys apart in check-config, never enough to use one."""
    if not key:
        return "(not set)"
    head = key.split("-", 1)[0] + "-" if "-" in key[:5] else ""
    return f"{head}...{key[-4:]}" if len(key) >= 12 else f"{head}..."
