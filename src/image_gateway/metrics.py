"""Prometheus metrics, served at GET /metrics.

Cheap on the hot path: the three series touched by every request (requests, attempts, attempt
latency) are plain ints and floats in dicts, turned into Prometheus samples at scrape time. A
labelled prometheus_client Counter takes a lock and three calls per inc() and a Histogram more; at
thousands of requests per second that showed up in profiles, and only the event loop writes these.
Label sets stay small (route, deployment, status), and gauges that describe state (jobs in flight,
queue depth, deployment health) are computed at scrape time too. Rare events (fallbacks, cooldowns,
reloads, ...) use prometheus_client's own Counters.

Several worker processes (`serve --workers N`): each worker has its own counters and answers
/metrics for itself only; scrape each worker, or run one worker per container (recommended).
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_BOUNDS = (*(repr(float(b)) for b in LATENCY_BUCKETS), "+Inf")  # `le` labels as prometheus_client writes them
FALLBACKS = Counter("gateway_fallbacks_total", "Requests moved to a fallback route", ["from_route", "to_route"])
RETRIES = Counter("gateway_retries_total", "Re-sends within a route after a retryable failure", ["route"])
COOLDOWNS = Counter("gateway_cooldowns_total", "Deployments taken out after repeated failures",
                    ["route", "deployment"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by a per-key limit", ["reason"])
IDEMPOTENCY = Counter("gateway_idempotency_total", "Requests carrying an Idempotency-Key, by result", ["result"])
RELOADS = Counter("gateway_config_reloads_total", "Config reloads", ["trigger", "result"])
HEADERS_REFUSED = Counter("gateway_connections_closed_headers_total", "Connections closed before their request "
                          "headers were complete: reason timeout (HEADER_TIMEOUT_S) or too_large", ["reason"])
OVER_CAPACITY = Counter("gateway_over_capacity_total", "Requests answered 503 past MAX_CONNECTIONS")
OPEN_CONNECTIONS = Gauge("gateway_open_connections", "HTTP connections open on this worker")
LOOP_LAG = Gauge("gateway_event_loop_lag_seconds", "How late the event loop woke a timer, last sample")

_requests: dict[tuple[str, int], int] = {}
_attempts: dict[tuple[str, str, str], int] = {}
_latency: dict[tuple[str, str], list[float]] = {}  # per bucket (then +Inf) counts, and the sum last


def count_request(route: str, status: int) -> None:
    key = (route, status)
    _requests[key] = _requests.get(key, 0) + 1


def count_attempt(route: str, deployment: str, outcome: str, seconds: float) -> None:
    key = (route, deployment, outcome)
    _attempts[key] = _attempts.get(key, 0) + 1
    hist = _latency.get((route, deployment))
    if hist is None:
        hist = _latency[(route, deployment)] = [0.0] * (len(LATENCY_BUCKETS) + 2)
    hist[bisect_left(LATENCY_BUCKETS, seconds)] += 1  # the first bucket whose bound is >= seconds
    hist[-1] += seconds


class _HotPathCollector(Collector):
    """The per-request series, read from the dicts above at scrape time."""

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily("gateway_requests", "HTTP requests answered, by route and status",
                                       labels=["route", "status"])
        for (route, status), n in list(_requests.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        attempts = CounterMetricFamily("gateway_upstream_attempts",
                                       "Upstream attempts by outcome (ok, retry, next, stop, ...)",
                                       labels=["route", "deployment", "outcome"])
        for labels, n in list(_attempts.items()):
            attempts.add_metric(list(labels), n)
        yield attempts
        latency = HistogramMetricFamily("gateway_upstream_latency_seconds", "Time of one upstream attempt",
                                        labels=["route", "deployment"])
        for (route, deployment), hist in list(_latency.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, count in zip(_BOUNDS, hist[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            latency.add_metric([route, deployment], buckets, sum_value=hist[-1])
        yield latency


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
        yield GaugeMetricFamily("gateway_queue_depth", "Async tasks not finished yet: waiting to be sent (e.g. for "
                                "an account slot), polled, or waiting for their key (engine)",
                                value=float(rt.engine.queue_depth))
        state = GaugeMetricFamily("gateway_deployment_state", "0 closed (serving), 1 open (cooling down), "
                                  "2 half-open (probing)", labels=["route", "deployment"])
        busy = GaugeMetricFamily("gateway_deployment_inflight", "Attempts running on a deployment's upstream",
                                 labels=["route", "deployment"])
        for d in router.pool.all_deployments():
            state.add_metric([d.route, d.label], float(d.health.state))
            busy.add_metric([d.route, d.label], float(d.endpoint.inflight))
        yield state
        yield busy
        info = GaugeMetricFamily("gateway_instance", "This process (GATEWAY_INSTANCE); always 1",
                                 labels=["instance"])
        info.add_metric([str(rt.cfg.instance)], 1.0)
        yield info
        yield GaugeMetricFamily("gateway_task_leases", "Tasks this process holds the poll lease of (REDIS_URL)",
                                value=float(getattr(rt.engine, "leases", 0)))
        yield GaugeMetricFamily("gateway_config_generation", "How many times the config was swapped since start",
                                value=float(getattr(rt, "generation", 0)))


_collector = _RuntimeCollector()
REGISTRY.register(_collector)
REGISTRY.register(_HotPathCollector())


def bind(rt: Any) -> None:
    """Point the scrape-time gauges at this Runtime (the last app built in a process wins)."""
    _collector.rt = rt


async def sample_loop_lag(interval_s: float = 0.5) -> None:
    """Forever: sleep `interval_s` and record how much later than asked the loop woke us."""
    while True:
        t0 = time.perf_counter()
        await asyncio.sleep(interval_s)
        LOOP_LAG.set(max(time.perf_counter() - t0 - interval_s, 0.0))


def render() -> bytes:
    """The Prometheus text page (served by api/health.py, which checks the key)."""
    return generate_latest(REGISTRY)
