"""Fallback and retries through the real gateway against fault-injecting fake upstreams."""

from __future__ import annotations

import concurrent.futures
import threading
import time

import httpx

from tests.conftest import GatewayFactory
from tests.gateway import free_port
from tests.routing_util import UPSTREAM_KEY, log_events, metric, post
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

FAST = "router: {retries: 0, backoff_s: 0.05, cooldown_failures: 0}\n"


def two_routes(a: str, b: str, extra: str = "", router: str = FAST) -> str:
    return router + f"""
routes:
  - name: primary
    provider: openai
    upstream_model: gpt-image-1
    deployments: [{{name: a, base_url: "{a}/v1"}}]
    fallbacks: [backup]
{extra}
  - name: backup
    provider: openai
    upstream_model: dall-e-3
    deployments: [{{name: b, base_url: "{b}/v1"}}]
"""


def test_primary_500_falls_back_and_headers_say_who_served(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=two_routes(a.url, b.url))
    a.state.fail_next(fake_openai.server_error())
    r = post(gw, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-model"] == "backup"
    assert r.headers["x-gateway-provider"] == "openai"
    assert r.headers["x-gateway-deployment"] == "b"
    assert a.state.count("/images") == 1 and b.state.count("/images") == 1
    # Translated anew for the fallback: its own upstream model.
    assert fake_openai.last_request(b.state).json["model"] == "dall-e-3"
    assert fake_openai.last_request(a.state).json["model"] == "gpt-image-1"
    failed = log_events(gw, "upstream attempt failed")
    assert failed and failed[0]["route"] == "primary" and failed[0]["status"] == 500
    assert failed[0]["action"] == "retry" and failed[0]["attempt"] == 1
    access = log_events(gw, "request", path="/v1/images/generations")
    assert access[-1]["route"] == "backup" and access[-1]["attempts"] == 2
    m = httpx.get(gw.url + "/metrics").text
    assert metric(m, "gateway_fallbacks_total", from_route="primary", to_route="backup") == 1
    assert metric(m, "gateway_upstream_attempts_total", route="primary", deployment="a", outcome="retry") == 1
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_client_errors_do_not_fall_back_unless_the_route_says_so(gateway: GatewayFactory,
                                                                  fakes: list[FakeServer]) -> None:
    a, b, c = fakes
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=two_routes(a.url, b.url))
    a.state.fail_next(fake_openai.moderation_blocked())
    r = post(gw, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "moderation_blocked"
    assert b.state.count("/images") == 0

    gw2 = gateway({"OPENAI_API_KEY": UPSTREAM_KEY},
                  config_yaml=two_routes(a.url, c.url, extra="    fallback_on_client_error: [moderation_blocked]"))
    a.state.fail_next(fake_openai.moderation_blocked())
    r = post(gw2, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 200 and r.headers["x-gateway-model"] == "backup"
    assert c.state.count("/images") == 1
    gw.assert_secret_absent(UPSTREAM_KEY)
    gw2.assert_secret_absent(UPSTREAM_KEY)


def test_unreachable_primary_and_alias_and_default_fallbacks(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    dead = f"http://127.0.0.1:{free_port()}"
    yaml = FAST + f"""
routes:
  - name: primary
    provider: openai
    deployments: [{{base_url: "{dead}/v1"}}]
  - name: backup
    provider: openai
    upstream_model: gpt-image-1
    deployments: [{{base_url: "{a.url}/v1"}}]
aliases: {{pic: primary}}
default_fallbacks: [backup]
"""
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    r = post(gw, {"model": "pic", "prompt": "otter"})
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-model"] == "backup" and a.state.count("/images") == 1
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_timeout_after_acceptance_moves_on_only_with_retry_on_timeout(gateway: GatewayFactory,
                                                                       fakes: list[FakeServer]) -> None:
    a, b, c = fakes
    slow_a = "providers:\n  openai: {timeout_s: 0.4}\n"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=slow_a + two_routes(a.url, b.url))
    a.state.fail_next(fake_openai.slow(2))
    r = post(gw, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 504, r.text  # the upstream may have billed: no second image job
    assert b.state.count("/images") == 0

    gw2 = gateway({"OPENAI_API_KEY": UPSTREAM_KEY},
                  config_yaml=slow_a + two_routes(a.url, c.url, extra="    retry_on_timeout: true"))
    a.state.fail_next(fake_openai.slow(2))
    r = post(gw2, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 200 and r.headers["x-gateway-model"] == "backup"
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_deployments_of_one_route_fail_over_and_balance_least_busy(gateway: GatewayFactory,
                                                                    fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    yaml = FAST + f"""
routes:
  - name: gpt-image-1
    provider: openai
    retries: 2
    deployments:
      - {{name: a, base_url: "{a.url}/v1"}}
      - {{name: b, base_url: "{b.url}/v1", api_key: "${{SECOND_KEY}}"}}
"""
    second = "sk-second-deployment-key-987654321"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "SECOND_KEY": second}, config_yaml=yaml)
    a.state.fail_next(fake_openai.server_error())
    b.state.fail_next(fake_openai.server_error())
    r = post(gw, {"model": "gpt-image-1", "prompt": "otter"})
    assert r.status_code == 200, r.text  # both failed once; the route's own `retries: 2` re-sent
    assert a.state.count("/images") + b.state.count("/images") == 3
    # Each deployment uses its own key.
    assert {rec.headers["authorization"] for rec in a.state.requests} == {f"Bearer {UPSTREAM_KEY}"}
    assert {rec.headers["authorization"] for rec in b.state.requests} == {f"Bearer {second}"}

    a.state.requests.clear()
    b.state.requests.clear()
    a.state.hold = b.state.hold = release = threading.Event()  # all four in flight together
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = []
        for _ in range(4):  # one at a time: each is in flight upstream before the next is routed
            futures.append(pool.submit(post, gw, {"model": "gpt-image-1", "prompt": "otter"}))
            wait_until(lambda: a.state.count("/images") + b.state.count("/images") == len(futures),
                       what="the request to reach an upstream")
        release.set()
        results = [f.result() for f in futures]
    assert all(x.status_code == 200 for x in results)
    assert a.state.count("/images") == 2 and b.state.count("/images") == 2  # least-busy, not all on one
    gw.assert_secret_absent(UPSTREAM_KEY, second)


def test_retries_back_off_and_honour_retry_after(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    yaml = f"""
router: {{retries: 2, backoff_s: 0.2, cooldown_failures: 0, max_retry_after_s: 5}}
providers:
  openai: {{base_url: "{a.url}/v1"}}
"""
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    a.state.fail_next(fake_openai.rate_limited("1"))
    t0 = time.monotonic()
    r = post(gw, {"model": "gpt-image-1", "prompt": "otter"})
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 >= 0.95  # waited for the upstream's Retry-After
    assert a.state.count("/images") == 2

    a.state.fail_next(fake_openai.server_error(), fake_openai.overloaded())
    t0 = time.monotonic()
    r = post(gw, {"model": "gpt-image-1", "prompt": "otter"})
    assert r.status_code == 200 and a.state.count("/images") == 5
    assert time.monotonic() - t0 >= 0.2  # back-off 0.1-0.2 s, then 0.2-0.4 s
    a.state.fail_next(*[fake_openai.server_error() for _ in range(3)])
    r = post(gw, {"model": "gpt-image-1", "prompt": "otter"})
    assert r.status_code == 500 and a.state.count("/images") == 8  # 1 + retries, then the error

    a.state.fail_next(fake_openai.rate_limited("60"))  # longer than max_retry_after_s: not waited for
    t0 = time.monotonic()
    r = post(gw, {"model": "gpt-image-1", "prompt": "otter"})
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert time.monotonic() - t0 < 3 and a.state.count("/images") == 9
    r = post(gw, {"model": "gpt-image-1", "prompt": "otter"})  # still inside the upstream's pause
    assert r.status_code == 429 and 55 <= int(r.headers["retry-after"]) <= 60
    assert a.state.count("/images") == 9  # not sent: the upstream asked for the pause
    m = httpx.get(gw.url + "/metrics").text
    assert metric(m, "gateway_retries_total", route="gpt-image-1") == 5
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_stream_falls_back_before_the_first_event(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=two_routes(a.url, b.url))
    a.state.fail_next(fake_openai.server_error())
    body = {"model": "primary", "prompt": "otter", "stream": True, "partial_images": 1}
    with httpx.stream("POST", gw.base_url + "/images/generations", json=body, timeout=30) as r:
        text = r.read().decode()
        headers = dict(r.headers)
    gw.remember(text)
    assert r.status_code == 200
    assert headers["x-gateway-model"] == "backup" and headers["x-gateway-deployment"] == "b"
    assert "partial_image" in text and "completed" in text and "event: error" not in text
    assert fake_openai.last_request(b.state).json["stream"] is True
    gw.assert_secret_absent(UPSTREAM_KEY)
