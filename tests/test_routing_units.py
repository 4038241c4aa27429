"""Unit tests of the routing pieces: breaker, failure policy, deployment choice, limiter, config shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_gateway.config import ConfigError, load_config
from image_gateway.core.settings import KeyLimit
from image_gateway.errors import GatewayError, UpstreamError, UpstreamTimeout
from image_gateway.routing.deployments import Pool, pick
from image_gateway.routing.health import CLOSED, HALF_OPEN, OPEN, Health
from image_gateway.routing.limits import Limiter
from image_gateway.routing.policy import Verdict, backoff_s, classify, retry_after_s


def test_breaker_opens_half_opens_with_one_probe_and_closes() -> None:
    h = Health()
    assert not h.failure(0.0, threshold=2, cooldown_s=10)
    assert h.failure(1.0, threshold=2, cooldown_s=10) and h.state == OPEN
    assert not h.available(5.0) and h.available(11.0)
    assert h.acquire(11.0) and h.state == HALF_OPEN
    assert not h.available(11.5) and not h.acquire(11.5)  # only one probe at a time
    assert h.success() and h.state == CLOSED and h.failures == 0
    h.failure(20.0, 2, 10)
    h.failure(20.0, 2, 10)
    h.acquire(31.0)
    assert h.failure(31.0, 2, 10) and h.state == OPEN and h.opened_until == 41.0  # a failed probe reopens
    h2 = Health()
    h2.failure(0.0, threshold=0, cooldown_s=10, retry_after_s=3)
    assert h2.state == CLOSED and not h2.available(2.0) and h2.available(3.0)


@pytest.mark.parametrize(("err", "options", "verdict"), [
    (GatewayError("x", status=500, retryable=True), {}, Verdict.RETRY),
    (GatewayError("x", status=429, code="rate_limit_exceeded", retryable=True), {}, Verdict.RETRY),
    (GatewayError("x", status=429, code="insufficient_quota", retryable=True), {}, Verdict.NEXT),
    (GatewayError("x", status=401, code="invalid_api_key"), {}, Verdict.NEXT),
    (UpstreamError("x", code="upstream_unreachable", retryable=True), {}, Verdict.RETRY),
    (UpstreamTimeout("x"), {}, Verdict.STOP),
    (UpstreamTimeout("x"), {"retry_on_timeout": True}, Verdict.RETRY),
    (UpstreamError("x", code="upstream_disconnected"), {"retry_on_timeout": "true"}, Verdict.RETRY),
    (GatewayError("x", status=400, code="moderation_blocked"), {}, Verdict.STOP),
    (GatewayError("x", status=400, code="moderation_blocked"), {"fallback_on_client_error": True}, Verdict.NEXT_ROUTE),
    (GatewayError("x", status=400, code="moderation_blocked"), {"fallback_on_client_error": ["400"]},
     Verdict.NEXT_ROUTE),
    (GatewayError("x", status=400, code="invalid_value"), {"fallback_on_client_error": ["moderation_blocked"]},
     Verdict.STOP),
])
def test_failure_policy(err: GatewayError, options: dict[str, object], verdict: Verdict) -> None:
    assert classify(err, options) is verdict


def test_retry_after_and_backoff() -> None:
    assert retry_after_s(GatewayError("x", headers={"Retry-After": "7"})) == 7
    assert retry_after_s(GatewayError("x", headers={"retry-after-ms": "250"})) == 0.25
    assert retry_after_s(GatewayError("x", headers={"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) is None
    for n, (lo, hi) in {1: (0.25, 0.5), 2: (0.5, 1.0), 3: (1.0, 2.0), 10: (2.0, 4.0)}.items():
        assert all(lo <= backoff_s(n, 0.5, 4.0) <= hi for _ in range(50))


def _pool(tmp_path: Path) -> Pool:
    y = tmp_path / "gw.yaml"
    y.write_text("routes:\n  - name: m\n    provider: openai\n    deployments:\n"
                 "      - {name: a, base_url: 'http://a/v1'}\n      - {name: b, base_url: 'http://b/v1'}\n")
    return Pool(load_config({"OPENAI_API_KEY": "sk-unit-000000000000"}, y, None))


def test_pick_prefers_healthy_untried_least_busy(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    a, b = pool.by_route["m"]
    a.endpoint.inflight = 3
    assert pick([a, b], 0.0, set()) == (b, 0.0)
    assert pick([a, b], 0.0, {id(b)}) == (a, 0.0)  # untried beats less busy
    b.health.failure(0.0, 1, 60)
    assert pick([a, b], 1.0, set()) == (a, 0.0)  # cooling: skipped
    a.health.failure(0.0, 0, 60, retry_after_s=5)
    assert pick([a, b], 1.0, set()) == (a, 4.0)  # only paused by Retry-After: wait for it
    a.health.state, a.health.opened_until = OPEN, 60.0
    assert pick([a, b], 1.0, set()) == (None, 0.0)  # its breaker stays open past the pause: not waited for
    a.health.opened_until = 3.0
    assert pick([a, b], 1.0, set()) == (a, 4.0)  # half-open by the time the pause ends: wait for it


def test_reload_pool_reuses_unchanged_endpoints_and_health(tmp_path: Path) -> None:
    old = _pool(tmp_path)
    old.by_route["m"][0].health.failure(0.0, 5, 60)
    y = tmp_path / "gw2.yaml"
    y.write_text("routes:\n  - name: m\n    provider: openai\n    deployments:\n"
                 "      - {name: a, base_url: 'http://a/v1'}\n      - {name: b, base_url: 'http://b2/v1'}\n")
    new = Pool(load_config({"OPENAI_API_KEY": "sk-unit-000000000000"}, y, None), old)
    a_old, b_old = old.by_route["m"]
    a_new, b_new = new.by_route["m"]
    assert a_new.endpoint is a_old.endpoint and a_new.health is a_old.health and a_new.health.failures == 1
    assert b_new.endpoint is not b_old.endpoint and b_new.health.failures == 0
    assert b_old.endpoint not in new.endpoints  # closed after the old pool drains


def test_limiter_rpm_and_concurrency() -> None:
    lim = Limiter()
    rule = KeyLimit(rpm=2, concurrent=2)
    assert lim.acquire("k", rule, 0.0) == (None, 0.0)
    assert lim.acquire("k", rule, 0.0) == (None, 0.0)
    assert lim.acquire("k", rule, 0.0)[0] == "concurrent"
    lim.release("k")
    reason, wait = lim.acquire("k", rule, 1.0)
    assert reason == "rpm" and 28 < wait < 30
    assert lim.acquire("k", rule, 31.0) == (None, 0.0)  # refilled at rpm/60 per second
    assert lim.acquire("other", rule, 31.0) == (None, 0.0)


@pytest.mark.parametrize(("text", "fragment"), [
    ("routes: [{name: m, provider: openai, deployments: [{api_key: sk-literal-0123456789}]}]", "${VAR} reference"),
    ("routes: [{name: m, provider: openai, deployments: [{name: a}, {name: a}]}]", "two deployments"),
    ("limits: {keys: [{key: gw-literal-0123456789, rpm: 1}]}", "${VAR} reference"),
    ("limits: {rpm: -1}", "negative"),
    ("limits: {burst: 3}", "unknown field"),
    ("router: {retires: 2}", "router"),
])
def test_invalid_routing_config_is_rejected(tmp_path: Path, text: str, fragment: str) -> None:
    y = tmp_path / "gw.yaml"
    y.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config({}, y, None)
    assert fragment in str(info.value) and "literal-0123456789" not in str(info.value)


def test_deployment_and_limit_keys_are_secrets_and_masked(tmp_path: Path) -> None:
    y = tmp_path / "gw.yaml"
    y.write_text("routes: [{name: m, provider: openai, deployments: [{api_key: '${K2}'}]}]\n"
                 "limits: {rpm: 5, keys: [{key: '${VIP}', rpm: 50}]}\n")
    cfg = load_config({"K2": "sk-second-0123456789", "VIP": "gw-vip-0123456789"}, y, None)
    assert {"sk-second-0123456789", "gw-vip-0123456789"} <= set(cfg.secrets())
    text = str(cfg.describe())
    assert "sk-second-0123456789" not in text and "gw-vip-0123456789" not in text
    assert cfg.limits.for_key("gw-vip-0123456789").rpm == 50 and cfg.limits.for_key("other").rpm == 5
