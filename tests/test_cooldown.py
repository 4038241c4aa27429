"""Cooldowns: a deployment that keeps failing is taken out, probed once (half-open), then back."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.routing_util import ADMIN_KEY, UPSTREAM_KEY, log_events, metric, post
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

COOL = "router: {retries: 0, cooldown_failures: 2, cooldown_s: 1}\n"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}  # /ready lists providers for an operator key only


def _state(gw: GatewayProcess, route: str) -> list[dict[str, Any]]:
    r = httpx.get(gw.url + "/admin/deployments", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    deployments: list[dict[str, Any]] = r.json()["routes"][route]
    return deployments


def _half_open(gw: GatewayProcess, route: str) -> None:
    """Wait out cooldown_s: the breaker lets one probe through once it has passed."""
    wait_until(lambda: _state(gw, route)[0]["state"] == "half_open", timeout=10, interval=0.05,
               what=f"{route} to go half-open")


def test_cooldown_opens_after_n_failures_and_closes_after_a_good_probe(gateway: GatewayFactory,
                                                                       fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    # The only keyed OpenAI deployment is this route's, so /ready can show it going out and back.
    yaml = COOL + f"""
routes:
  - name: gpt-image-1
    deployments: [{{name: main, base_url: "{a.url}/v1", api_key: "${{OPENAI_KEY_MAIN}}"}}]
"""
    # The checks while open must fit in cooldown_s: 2 s leaves room for a loaded machine (waits are on state).
    yaml = yaml.replace("cooldown_s: 1", "cooldown_s: 2")
    gw = gateway({"OPENAI_KEY_MAIN": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY}, config_yaml=yaml)
    assert "openai" in httpx.get(gw.url + "/ready", headers=ADMIN).json()["providers"]
    a.state.fail_next(fake_openai.server_error(), fake_openai.server_error())
    for _ in range(2):
        assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 500
    assert _state(gw, "gpt-image-1")[0]["state"] == "open"
    assert log_events(gw, "deployment cooling down")

    # Open: answered at once, the upstream is not contacted.
    r = post(gw, {"model": "gpt-image-1", "prompt": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert 1 <= int(r.headers["retry-after"]) <= 3
    assert a.state.count("/images") == 2
    ready = httpx.get(gw.url + "/ready", headers=ADMIN).json()
    assert "openai" not in ready["providers"] and "demo" in ready["providers"]
    m = httpx.get(gw.url + "/metrics", headers=ADMIN).text
    assert metric(m, "gateway_cooldowns_total", route="gpt-image-1", deployment="main") == 1
    assert metric(m, "gateway_deployment_state", route="gpt-image-1", deployment="main") == 1

    # Half-open after cooldown_s: one probe goes through; it fails, so the breaker opens again.
    _half_open(gw, "gpt-image-1")
    a.state.fail_next(fake_openai.server_error())
    assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 500
    assert a.state.count("/images") == 3
    assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 503
    assert a.state.count("/images") == 3

    # Next probe succeeds: closed again, traffic flows.
    _half_open(gw, "gpt-image-1")
    assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 200
    assert _state(gw, "gpt-image-1")[0]["state"] == "closed"
    assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 200
    assert a.state.count("/images") == 5
    assert "openai" in httpx.get(gw.url + "/ready", headers=ADMIN).json()["providers"]
    assert log_events(gw, "deployment back in service")
    gw.assert_secret_absent(UPSTREAM_KEY, ADMIN_KEY)


def test_a_cooling_deployment_is_skipped_for_its_fallback(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    yaml = COOL + f"""
routes:
  - name: primary
    provider: openai
    deployments: [{{name: a, base_url: "{a.url}/v1"}}]
    fallbacks: [backup]
  - name: backup
    provider: openai
    deployments: [{{name: b, base_url: "{b.url}/v1"}}]
"""
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    a.state.fail_next(*[fake_openai.overloaded() for _ in range(2)])
    for _ in range(4):
        r = post(gw, {"model": "primary", "prompt": "x"})
        assert r.status_code == 200 and r.headers["x-gateway-model"] == "backup"
    assert a.state.count("/images") == 2  # after two failures the primary is no longer tried
    assert b.state.count("/images") == 4
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_client_errors_do_not_open_the_breaker(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    yaml = COOL + f"providers:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    a.state.fail_next(*[fake_openai.moderation_blocked() for _ in range(3)])
    for _ in range(3):
        assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 400
    assert post(gw, {"model": "gpt-image-1", "prompt": "x"}).status_code == 200
    gw.assert_secret_absent(UPSTREAM_KEY)
