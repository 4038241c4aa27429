"""An upstream's failure as the gateway's OpenAI-shaped error, once the adapter knows what kind it is.

Adapters whose upstreams do not speak OpenAI's error shape read their own body, decide the kind
from the upstream's code or status, and hand it here, so that every one of them answers a caller the
same way: the same status, type and code for the same kind of failure. `error()` takes the adapter's
own wording (google_wire, openrouter, azure, a1111, comfyui_wire, grsai_wire, polled_http);
`mapped()` words it too (stability, ark_wire, dashscope_wire).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from ..errors import GatewayError, redact, scrub
from .http import body_tail, retry_after

Kind = Literal["policy", "quota", "auth", "forbidden", "rate", "invalid", "not_found", "upstream", "timeout"]


def kind_of_status(status: int) -> Kind:
    """The kind an HTTP status means when the upstream's code says nothing more specific."""
    if status in (401,):
        return "auth"
    if status == 402:
        return "quota"
    if status == 403:
        return "forbidden"
    if status == 404:
        return "not_found"
    if status == 429:
        return "rate"
    if status in (408, 504):
        return "timeout"
    if 400 <= status < 500:
        return "invalid"
    return "upstream"


def error(kind: Kind, message: str, *, code: str | None = None, param: str | None = None,
          retry: Mapping[str, str] | None = None) -> GatewayError:
    """The caller's error of `kind` with the adapter's own `message` (not yet scrubbed): the status,
    type, code and retryability each kind has for every adapter. `code` overrides the default code of
    the kinds that keep the upstream's own (forbidden, invalid, not_found, upstream); `retry` is the
    Retry-After a rate limit carries."""
    if kind == "policy":
        return GatewayError(message, status=400, type="invalid_request_error", code="content_policy_violation",
                            param=param)
    if kind == "quota":
        # Out of credit says "not with this account", never "not now": a 429 the router does not pause on.
        return GatewayError(message, status=429, type="insufficient_quota", code="insufficient_quota")
    if kind == "auth":
        return GatewayError(message, status=401, type="invalid_request_error", code="invalid_api_key")
    if kind == "forbidden":
        return GatewayError(message, status=403, type="invalid_request_error", code=code or "forbidden")
    if kind == "rate":
        return GatewayError(message, status=429, type="rate_limit_error", code="rate_limit_exceeded",
                            headers=retry or {}, retryable=True)
    if kind == "invalid":
        return GatewayError(message, status=400, type="invalid_request_error", code=code or "invalid_value",
                            param=param)
    if kind == "not_found":
        return GatewayError(message, status=404, type="invalid_request_error", code=code or "model_not_found")
    if kind == "timeout":
        return GatewayError(message, status=504, type="timeout", code="timeout")
    return GatewayError(message, status=502, type="upstream_error", code=code or "upstream_error", retryable=True)


_SAYS: dict[Kind, str] = {
    "policy": "Your request was rejected by {label}'s safety system: {text}",
    "quota": "{label} refused the request: the account is out of credit or quota ({text})",
    "auth": "{label} rejected the API key: {text}",
    "forbidden": "{label} refused access: {text}",
    "rate": "{label} is rate limiting: {text}",
    "invalid": "{label} rejected the request: {text}",
    "not_found": "{label} does not know that model or resource: {text}",
    "timeout": "{label} did not answer in time: {text}",
    "upstream": "{label} upstream error: {text}",
}


def mapped(kind: Kind, message: str, *, label: str, code: str | None = None, param: str | None = None,
           headers: Mapping[str, str] | None = None, secrets: Iterable[str | None] = ()) -> GatewayError:
    """`error()` with the gateway's wording for `kind`, for adapters that read only a message and a
    code out of the upstream's body; `code` is the upstream's own (kept for caller mistakes, where it
    says what was wrong). The message and every field are scrubbed of keys."""
    keys = list(secrets)
    text = redact(message.strip() or "no detail given", keys)
    said = _SAYS[kind].format(label=label, text=text)
    return scrub(error(kind, said, code=code, param=param, retry=retry_after(headers or {})), keys)


def summary(status: int, raw: bytes) -> str:
    """An error answer without a message of its own, in words: its status and, when short text, its body."""
    return f"HTTP {status}{body_tail(raw)}"
