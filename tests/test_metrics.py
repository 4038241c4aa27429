"""GET /metrics (Prometheus text) and the JSON access log: route, provider, attempts, latency, no keys."""

from __future__ import annotations

import httpx

from tests.conftest import GatewayFactory
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
    assert metric(m, "gateway_retries_total", route="gpt-image-1") == 1
    for name in ("gateway_event_loop_lag_seconds", "gateway_jobs_in_flight", "gateway_queue_depth",
                 "gateway_deployment_state", "gateway_config_generation"):
        assert f"\n{name}" in m, name
    assert metric(m, "gateway_jobs_in_flight") == 0
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
