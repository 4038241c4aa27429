"""Prometheus metrics, served at GET /metrics.

Cheap on the hot path: label children are cached in plain dicts (no `labels()` lookup per
request), label sets stay small (route, deployment, status), and gauges that describe state
(jobs in flight, queue depth, deployment health) are computed at scrape time, not per request.

Several worker processes (`serve --workers N`): each worker has its own counters and answers
/metrics for itself only; scrape each worker, or run one worker per container (recommended).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

REQUESTS = Counter("gateway_requests_total", "HTTP requests answered, by route and status", ["route", "status"])
ATTEMPTS = Counter("gateway_upstream_attempts_total", "Upstream attempts by outcome (ok, retry, next, stop, ...)",
                   ["route", "deployment", "outcome"])
LATENCY = Histogram("gateway_upstream_latency_seconds", "Time of one upstream attempt", ["route", "deployment"],
                    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600))
FALLBACKS = Counter("gateway_fallbacks_total", "Requests moved to a fallback route", ["from_route", "to_route"])
RETRIES = Counter("gateway_retries_total", "Re-sends within a route after a retryable failure", ["route"])
COOLDOWNS = Counter("gateway_cooldowns_total", "Deployments taken out after repeated failures",
                    ["route", "deployment"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by a per-key limit", ["reason"])
IDEMPOTENCY = Counter("gateway_idempotency_total", "Requests carrying an Idempotency-Key, by result", ["result"])
RELOADS = Counter("gateway_config_reloads_total", "Config reloads", ["trigger", "result"])
LOOP_LAG = Gauge("gateway_event_loop_lag_seconds", "How late the event loop woke a timer, last sample")

_requests: dict[tuple[str, int], Any] = {}
_attempts: dict[tuple[str, str, str], Any] = {}
_latency: dict[tuple[str, str], Any] = {}


def count_request(route: str, status: int) -> None:
    child = _requests.get((route, status))
    if child is None:
        child = _requests[(route, status)] = REQUESTS.labels(route, str(status))
    child.inc()


def count_attempt(route: str, deployment: str, outcome: str, seconds: float) -> None:
    key = (route, deployment, outcome)
    child = _attempts.get(key)
    if child is None:
        child = _attempts[key] = ATTEMPTS.labels(*key)
    child.inc()
    hist = _latency.get((route, deployment))
    if hist is None:
        hist = _latency[(route, deployment)] = LATENCY.labels(route, deployment)
    hist.observe(seconds)


class _RuntimeCollector(Collector):
    """Reads the live Runtime at scrape time: in-flight jobs, queue depth, deployment health."""

    def __init__(self) -> None:
        self.rt: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rt = self.rt
        if rt is None:
            return
        router = rt.router
        yield GaugeMetricFamily("gateway_jobs_in_flight", "Image requests being routed right now",
                                value=router.inflight())
        depth = getattr(rt.engine, "queue_depth", 0)
        depth = depth() if callable(depth) else depth
        yield GaugeMetricFamily("gateway_queue_depth", "Async upstream tasks waiting to finish (engine)",
                                value=float(depth or 0))
        state = GaugeMetricFamily("gateway_deployment_state", "0 closed (serving), 1 open (cooling down), "
                                  "2 half-open (probing)", labels=["route", "deployment"])
        busy = GaugeMetricFamily("gateway_deployment_inflight", "Attempts running on a deployment's upstream",
                                 labels=["route", "deployment"])
        for d in router.pool.all_deployments():
            state.add_metric([d.route, d.label], float(d.health.state))
            busy.add_metric([d.route, d.label], float(d.endpoint.inflight))
        yield state
        yield busy
        yield GaugeMetricFamily("gateway_config_generation", "How many times the config was swapped since start",
                                value=float(getattr(rt, "generation", 0)))


_collector = _RuntimeCollector()
REGISTRY.register(_collector)


def bind(rt: Any) -> None:
    """Point the scrape-time gauges at this Runtime (the last app built in a process wins)."""
    _collector.rt = rt


async def sample_loop_lag(interval_s: float = 0.5) -> None:
    """Forever: sleep `interval_s` and record how much later than asked the loop woke us."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(interval_s)
        LOOP_LAG.set(max(time.perf_counter() - t0 - interval_s, 0.0))


async def endpoint(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
