"""Per-key limits: requests per minute and concurrent jobs → 429 with Retry-After."""

from __future__ import annotations

import concurrent.futures

import httpx

from tests.conftest import GatewayFactory
from tests.routing_util import UPSTREAM_KEY, metric, post
from tests.upstreams.base import FakeServer

KEY_A = "gw-limits-key-a-0123456789"
KEY_B = "gw-limits-key-b-0123456789"


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_requests_per_minute_per_key(gateway: GatewayFactory) -> None:
    yaml = "limits:\n  rpm: 2\n  keys:\n    - {key: '${VIP_KEY}', rpm: 100}\n"
    gw = gateway({"GATEWAY_API_KEYS": f"{KEY_A},{KEY_B}", "VIP_KEY": KEY_B}, config_yaml=yaml)
    body = {"model": "demo", "prompt": "x", "size": "32x32"}
    assert [post(gw, body, _auth(KEY_A)).status_code for _ in range(2)] == [200, 200]
    r = post(gw, body, _auth(KEY_A))
    assert r.status_code == 429, r.text
    assert r.json()["error"]["code"] == "rate_limit_exceeded" and r.json()["error"]["type"] == "requests"
    assert 25 <= int(r.headers["retry-after"]) <= 30  # one token back in 30 s at 2 per minute
    assert httpx.get(gw.base_url + "/models", headers=_auth(KEY_A)).status_code == 200  # reads don't count
    assert all(post(gw, body, _auth(KEY_B)).status_code == 200 for _ in range(4))  # its own, higher limit
    assert post(gw, body, _auth("gw-unknown-key-000000000")).status_code == 401  # auth first, not counted
    m = httpx.get(gw.url + "/metrics").text
    assert metric(m, "gateway_rate_limited_total", reason="rpm") == 1
    gw.assert_secret_absent(KEY_A, KEY_B)


def test_concurrent_jobs_per_key(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    a.state.delay_s = 1.0
    yaml = f"limits: {{concurrent: 1}}\nproviders:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({"GATEWAY_API_KEYS": f"{KEY_A},{KEY_B}", "OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    body = {"model": "gpt-image-1", "prompt": "x"}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(post, gw, body, _auth(KEY_A))
        other_key = pool.submit(post, gw, body, _auth(KEY_B))
        while a.state.count("/images") < 2:
            pass
        second = post(gw, body, _auth(KEY_A))
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert second.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert first.result().status_code == 200 and other_key.result().status_code == 200
    assert post(gw, body, _auth(KEY_A)).status_code == 200  # the slot was given back
    gw.assert_secret_absent(KEY_A, KEY_B, UPSTREAM_KEY)
