"""One upstream attempt of a routed request: its in-flight slot, the breaker's probe, metrics, and
how a failure is judged for the deployment (a capacity pause or a health failure)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import MutableMapping
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..core.settings import Route
from ..core.types import CallContext, ImageRequest
from ..errors import GatewayError
from .deployments import Deployment
from .policy import Verdict, is_deployment_fault, retry_after_s

if TYPE_CHECKING:
    from .router import Router

log = logging.getLogger("image_gateway.routing")  # (the router's log lines, as before)


class Attempt:
    """One upstream attempt: in-flight count, breaker probe, metrics and the failure log line."""

    __slots__ = ("ctx", "dep", "error", "held", "ms", "n", "probe", "provider", "req", "retry", "route", "router",
                 "t0", "until", "verdict", "wait")

    def __init__(self, router: Router, route: Route, req: ImageRequest, dep: Deployment, ctx: CallContext, n: int,
                 wait: float, retry: bool) -> None:
        self.router, self.route, self.req, self.dep, self.ctx, self.n = router, route, req, dep, ctx, n
        self.provider = dep.endpoint.provider
        self.wait = wait  # to sleep before sending (back-off or an upstream's Retry-After)
        self.retry = retry  # a re-send within the route
        self.error: GatewayError | None = None
        self.verdict: Verdict | None = None
        self.t0 = 0.0
        self.ms = 0.0
        self.probe = False

    def start(self, state: MutableMapping[str, Any]) -> None:
        """Right before sending: counts it, takes the half-open probe if that is due, fills `state`."""
        dep = self.dep
        if self.retry:
            metrics.RETRIES.labels(self.route.name).inc()
        state["route"], state["provider"], state["deployment"] = self.route.name, self.route.provider, dep.label
        state["attempts"] = self.n
        self.probe = dep.health.acquire(asyncio.get_running_loop().time())  # True when this is the probe
        dep.endpoint.inflight += 1
        self.t0 = time.perf_counter()

    def end(self) -> None:
        """Always called once after `start`: gives back the in-flight slot and an unanswered probe."""
        self.dep.endpoint.inflight -= 1
        if self.probe and self.dep.health.probing:  # neither success() nor failure() settled it
            self.dep.health.release_probe()

    def ok(self, state: MutableMapping[str, Any]) -> None:
        elapsed = time.perf_counter() - self.t0
        self.ms = state["upstream_ms"] = round(elapsed * 1000, 1)
        metrics.count_attempt(self.route.name, self.dep.label, "ok", elapsed)
        if self.dep.health.success():
            log.info("deployment back in service", extra={"route": self.route.name, "deployment": self.dep.label})
            if self.router.pool.sync is not None:  # REDIS_URL: the other processes close theirs too
                self.router.pool.sync.closed(self.dep)

    def failed(self, err: GatewayError, verdict: Verdict, request_id: str, key_is_configured: bool) -> None:
        """Judges a failure for the deployment: a capacity answer pauses it (`until`; `held` when it only
        holds this request), a health failure counts toward its breaker. Sets `until`/`held` (only here,
        so a successful attempt never pays for them)."""
        self.error, self.verdict = err, verdict
        elapsed = time.perf_counter() - self.t0
        self.ms = round(elapsed * 1000, 1)
        rs = self.router.cfg.router
        dep = self.dep
        now = asyncio.get_running_loop().time()
        after = retry_after_s(err)
        opened = False
        self.until, self.held = 0.0, False
        if err.capacity:
            # "Not now", never "broken". The deployment's own key pauses it for every caller; a caller's
            # own key being rate-limited says nothing about the others, so it holds only this request.
            if key_is_configured:
                self.until = dep.health.pause(now, after, rs.backoff_s, rs.backoff_max_s, err.again_after(0))
                if self.router.pool.sync is not None:
                    self.router.pool.sync.paused(dep, now, self.until, err)
            else:
                self.until, self.held = now + (after if after is not None else rs.backoff_s), True
            after = self.until - now
            if not any(k.lower() == "retry-after" for k in err.headers):  # none from upstream: say ours
                err.headers["Retry-After"] = str(max(1, math.ceil(after)))
        elif is_deployment_fault(err, verdict, key_is_configured):
            opened = dep.health.failure(now, rs.cooldown_failures, rs.cooldown_s, after)
        elif 400 <= err.status < 500 and err.status not in (401, 403, 429):
            dep.health.success()  # the upstream answered sensibly: it is alive
        metrics.count_attempt(self.route.name, dep.label, verdict.value, elapsed)
        log.warning("upstream attempt failed", extra={
            "request_id": request_id, "route": self.route.name, "provider": self.route.provider,
            "deployment": dep.label, "attempt": self.n, "status": err.status, "code": err.code,
            "ms": self.ms, "action": verdict.value, "retry_after_s": after, "capacity": err.capacity})
        if opened:
            if self.router.pool.sync is not None:
                self.router.pool.sync.opened(dep, rs.cooldown_s)
            metrics.COOLDOWNS.labels(self.route.name, dep.label).inc()
            log.warning("deployment cooling down", extra={"route": self.route.name, "deployment": dep.label,
                                                          "cooldown_s": rs.cooldown_s,
                                                          "consecutive_failures": dep.health.failures})
