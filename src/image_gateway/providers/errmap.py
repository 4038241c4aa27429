"""An upstream's failure as the gateway's OpenAI-shaped error, once the adapter knows what kind it is.

Adapters whose upstreams do not speak OpenAI's error shape (Stability, Ark, DashScope...) read their
own body, decide the kind from the upstream's code, and hand it here, so that every one of them
answers a caller the same way: the same status, type and code for the same kind of failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from ..errors import GatewayError, redact, scrub
from .http import retry_after

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


def mapped(kind: Kind, message: str, *, label: str, code: str | None = None, param: str | None = None,
           headers: Mapping[str, str] | None = None, secrets: Iterable[str | None] = ()) -> GatewayError:
    """The caller's error for one upstream failure of `kind`; `code` is the upstream's own (kept for
    caller mistakes, where it says what was wrong). The message and every field are scrubbed of keys."""
    keys = list(secrets)
    text = redact(message.strip() or "no detail given", keys)
    err: GatewayError
    if kind == "policy":
        err = GatewayError(f"Your request was rejected by {label}'s safety system: {text}", status=400,
                           type="invalid_request_error", code="content_policy_violation", param=param)
    elif kind == "quota":
        # Out of credit says "not with this account", never "not now": a 429 the router does not pause on.
        err = GatewayError(f"{label} refused the request: the account is out of credit or quota ({text})",
                           status=429, type="insufficient_quota", code="insufficient_quota")
    elif kind == "auth":
        err = GatewayError(f"{label} rejected the API key: {text}", status=401, type="invalid_request_error",
                           code="invalid_api_key")
    elif kind == "forbidden":
        err = GatewayError(f"{label} refused access: {text}", status=403, type="invalid_request_error",
                           code=code or "forbidden")
    elif kind == "rate":
        err = GatewayError(f"{label} is rate limiting: {text}", status=429, type="rate_limit_error",
                           code="rate_limit_exceeded", headers=retry_after(headers or {}), retryable=True)
    elif kind == "invalid":
        err = GatewayError(f"{label} rejected the request: {text}", status=400, type="invalid_request_error",
                           code=code or "invalid_value", param=param)
    elif kind == "not_found":
        err = GatewayError(f"{label} does not know that model or resource: {text}", status=404,
                           type="invalid_request_error", code=code or "model_not_found")
    elif kind == "timeout":
        err = GatewayError(f"{label} did not answer in time: {text}", status=504, type="timeout", code="timeout")
    else:
        err = GatewayError(f"{label} upstream error: {text}", status=502, type="upstream_error",
                           code=code or "upstream_error", retryable=True)
    return scrub(err, keys)
