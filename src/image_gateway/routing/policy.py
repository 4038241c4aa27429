"""What to do after a failed attempt, under docs/design.md's rule that retries must not double-bill.

Free to go again where no image can exist: connection refused, 401/403, 429 or queue full before
acceptance, 5xx answered at once, an upstream task that says FAILED (providers mark these
`GatewayError.retryable`). After a read timeout or a dropped connection on an upstream that had
accepted the request, a sync route moves on only with `retry_on_timeout: true`. Client errors
(bad parameter, content policy) end the request unless the route lists them in
`fallback_on_client_error` (true, or a list of error codes / statuses).

A capacity answer (`GatewayError.capacity`: a 429 other than out-of-credit, a full queue) says
"not now", not "broken": it is retried elsewhere or later but never counts toward the breaker,
which counts health failures only (refused connections, 5xx, timeouts, malformed answers).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from typing import Any

from ..core.settings import truthy
from ..errors import GatewayError, UpstreamTimeout


class Verdict(enum.Enum):
    RETRY = "retry"  # may be re-sent: to another deployment at once, to the same one after a back-off
    NEXT = "next"  # this deployment can't serve it (bad key, no quota): try the others, not it again
    NEXT_ROUTE = "next_route"  # a client error the route allows falling back on: go to its fallbacks
    STOP = "stop"  # answer the caller with this error


def flag(options: Mapping[str, Any], name: str) -> bool:
    return truthy(options.get(name, False)) is True


def maybe_billed(err: GatewayError) -> bool:
    """A read timeout or dropped connection after the upstream accepted: an image may exist."""
    return isinstance(err, UpstreamTimeout) or err.code == "upstream_disconnected"


def classify(err: GatewayError, options: Mapping[str, Any]) -> Verdict:
    if err.code == "insufficient_quota" or err.status in (401, 403):
        return Verdict.NEXT
    if err.retryable or err.capacity:
        return Verdict.RETRY
    if maybe_billed(err):
        return Verdict.RETRY if flag(options, "retry_on_timeout") else Verdict.STOP
    allowed = options.get("fallback_on_client_error", False)
    if isinstance(allowed, list | tuple):
        if err.code in allowed or str(err.status) in {str(a) for a in allowed}:
            return Verdict.NEXT_ROUTE
    elif flag(options, "fallback_on_client_error") and 400 <= err.status < 500:
        return Verdict.NEXT_ROUTE
    return Verdict.STOP


def is_deployment_fault(err: GatewayError, verdict: Verdict, key_is_configured: bool) -> bool:
    """Whether the failure counts toward the deployment's cooldown (a health failure)."""
    if err.capacity:
        return False  # "not now": the deployment is paused instead (Health.pause)
    if verdict is Verdict.NEXT:
        return key_is_configured  # a caller's own bad key says nothing about the deployment
    return verdict is Verdict.RETRY or maybe_billed(err)


def retry_after_s(err: GatewayError) -> float | None:
    """Seconds from the upstream's Retry-After (seconds form) or retry-after-ms."""
    h = {k.lower(): v for k, v in err.headers.items()}
    try:
        if "retry-after-ms" in h:
            return max(float(h["retry-after-ms"]) / 1000.0, 0.0)
        if "retry-after" in h:
            return max(float(h["retry-after"]), 0.0)
    except ValueError:
        return None  # an HTTP-date: rare for these upstreams; fall back to the back-off
    return None


def backoff_s(retry: int, base: float, cap: float) -> float:
    """Exponential back-off with jitter: retry 1 → ~base, 2 → ~2·base ... each in [50 %, 100 %]."""
    return float(min(cap, base * (2 ** max(retry - 1, 0))) * random.uniform(0.5, 1.0))
