"""GET /metrics (Prometheus text) and the JSON access log: route, provider, attempts, latency, no keys."""

from __future__ import annotations

import asyncio

import httpx

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.routing_util import UPSTREAM_KEY, log_events, metric, post
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer


def test_metrics_page_counts_requests_attempts_and_state(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    yaml = f"router: {{retries: 1, backoff_s: 0.01}}\nproviders:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    assert post(gw, {"model": "demo", "prompt": "x", "size": "64x64"}).status_code == 200
    a.state.fail_next(fake_openai.server_error())
    assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 200
    assert post(gw, {"model": "no-such-model", "prompt": "x"}).status_code == 404
    r = httpx.get(gw.url + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = r.text
    assert metric(m, "gateway_requests_total", route="demo", status="200") == 1
    assert metric(m, "gateway_requests_total", route="gpt-image-1", status="200") == 1
    assert metric(m, "gateway_requests_total", route="-", status="404") == 1
    assert metric(m, "gateway_upstream_attempts_total", route="gpt-image-1", deployment="openai", outcome="ok") == 1
    assert metric(m, "gateway_upstream_attempts_total", route="gpt-image-1", deployment="openai",
                  outcome="retry") == 1
    assert metric(m, "gateway_upstream_latency_seconds_count", route="gpt-image-1", deployment="openai") == 2
    assert metric(m, "gateway_upstream_latency_seconds_bucket", route="gpt-image-1", deployment="openai",
                  le="+Inf") == 2
    assert metric(m, "gateway_upstream_latency_seconds_bucket", route="gpt-image-1", deployment="openai",
                  le="600.0") == 2  # both well under 600 s (a 0 here would mean mis-bucketed)
    assert metric(m, "gateway_retries_total", route="gpt-image-1") == 1
    for name in ("gateway_event_loop_lag_seconds", "gateway_jobs_in_flight", "gateway_queue_depth",
                 "gateway_deployment_state", "gateway_config_generation"):
        assert f"\n{name}" in m, name
    assert metric(m, "gateway_jobs_in_flight") == 0 and metric(m, "gateway_queue_depth") == 0
    assert UPSTREAM_KEY not in m
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_access_log_has_request_id_route_attempts_latency_and_no_keys(gateway: GatewayFactory,
                                                                      fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    caller_key = "sk-callers-own-key-abcdef0123456"
    yaml = f"router: {{retries: 1, backoff_s: 0.01}}\nproviders:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({}, config_yaml=yaml)
    a.state.fail_next(fake_openai.server_error())
    r = post(gw, {"model": "gpt-image-1", "prompt": "x"}, {"Authorization": f"Bearer {caller_key}",
                                                           "X-Request-ID": "trace-abc-123"})
    assert r.status_code == 200, r.text
    line = log_events(gw, "request", request_id="trace-abc-123")[0]
    assert line["route"] == "gpt-image-1" and line["provider"] == "openai" and line["deployment"] == "openai"
    assert line["attempts"] == 2 and line["upstream_ms"] >= 0 and line["ms"] >= line["upstream_ms"]
    failed = log_events(gw, "upstream attempt failed")[0]
    assert failed["request_id"] == "trace-abc-123" and failed["attempt"] == 1 and "ms" in failed
    assert fake_openai.last_request(a.state).headers["authorization"] == f"Bearer {caller_key}"
    gw.assert_secret_absent(caller_key)


async def _concurrent_posts(url: str, total: int, at_once: int) -> None:
    """Requests in flight together, as under load (one at a time, the young generation never fills)."""
    async with httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=at_once)) as client:
        async def one() -> None:
            r = await client.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a fox"})
            assert r.status_code == 200

        for _ in range(total // at_once):
            await asyncio.gather(*(one() for _ in range(at_once)))


def _gc_runs(gw: GatewayProcess, generation: str) -> float:
    return metric(httpx.get(gw.url + "/metrics").text, "python_gc_collections_total",
                  generation=generation)


def test_gc_is_tuned_for_a_server_and_the_knob_works(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    """Start-up objects are frozen and young collections are rare (gc_tuning.py); GC_GEN0_THRESHOLD=0
    gives Python's default back. Counted on the process's own Prometheus GC collector."""
    env = {"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": f"{openai_upstream.url}/v1"}
    runs = {}
    for threshold in ("20000", "0"):
        gw = gateway({**env, "GC_GEN0_THRESHOLD": threshold})
        before = _gc_runs(gw, "0")
        asyncio.run(_concurrent_posts(gw.url, total=640, at_once=32))
        runs[threshold] = _gc_runs(gw, "0") - before
        assert _gc_runs(gw, "2") <= 2  # full passes: the one that freezes start-up, and at most one more
        gw.assert_secret_absent(UPSTREAM_KEY)
    assert runs["20000"] <= 2 < runs["0"], runs
