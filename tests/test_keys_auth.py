"""Bring your own key: gateway keys, X-Provider-Key, bearer passthrough; no key ever leaks."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import GatewayFactory
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

CONFIGURED = "sk-configured-aaaaaaaaaaaa1111"
OWN = "sk-own-key-bbbbbbbbbbbbbb2222"
HEADER = "sk-header-key-cccccccccccc3333"
GW = "gw-secret-dddddddddddd4444"


def test_bearer_token_is_the_provider_key_when_no_gateway_keys(gateway: GatewayFactory,
                                                                openai_upstream: FakeServer) -> None:
    gw = gateway({"OPENAI_BASE_URL": openai_upstream.url + "/v1"})
    client = openai.OpenAI(base_url=gw.base_url, api_key=OWN, max_retries=0)
    res = client.images.generate(model="gpt-image-1", prompt="otter")
    assert fake_openai.last_request(openai_upstream.state).headers["authorization"] == f"Bearer {OWN}"
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent(OWN)


def test_x_provider_key_wins_over_configured(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    gw = gateway({"OPENAI_BASE_URL": openai_upstream.url + "/v1", "OPENAI_API_KEY": CONFIGURED,
                  "GATEWAY_API_KEY": GW})
    client = openai.OpenAI(base_url=gw.base_url, api_key=GW, max_retries=0)
    client.images.generate(model="gpt-image-1", prompt="otter", extra_headers={"X-Provider-Key": HEADER})
    assert fake_openai.last_request(openai_upstream.state).headers["authorization"] == f"Bearer {HEADER}"
    client.images.generate(model="gpt-image-1", prompt="otter")
    assert fake_openai.last_request(openai_upstream.state).headers["authorization"] == f"Bearer {CONFIGURED}"
    gw.assert_secret_absent(CONFIGURED, HEADER, GW)


def test_gateway_key_required_and_bearer_not_forwarded(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    gw = gateway({"OPENAI_BASE_URL": openai_upstream.url + "/v1", "GATEWAY_API_KEYS": f"{GW}, gw-second-key-xyz"})
    missing = httpx.post(gw.base_url + "/images/generations", json={"model": "demo", "prompt": "x"})
    wrong = httpx.post(gw.base_url + "/images/generations", json={"model": "demo", "prompt": "x"},
                       headers={"Authorization": "Bearer gw-wrong-key-000000"})
    models = httpx.get(gw.base_url + "/models")
    assert missing.status_code == wrong.status_code == models.status_code == 401
    assert missing.json()["error"]["code"] == "invalid_api_key"
    ok = httpx.post(gw.base_url + "/images/generations", json={"model": "demo", "prompt": "x", "size": "64x64"},
                    headers={"Authorization": "Bearer gw-second-key-xyz"})
    assert ok.status_code == 200
    # With gateway keys on, the gateway key is never used as the provider key: 401 names what to set.
    client = openai.OpenAI(base_url=gw.base_url, api_key=GW, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        client.images.generate(model="gpt-image-1", prompt="otter")
    msg = info.value.response.json()["error"]["message"]
    assert "OPENAI_API_KEY" in msg and "X-Provider-Key" in msg
    assert openai_upstream.state.count("/v1/images") == 0
    gw.remember(missing.text, wrong.text, models.text, ok.text, info.value.response.text)
    gw.assert_secret_absent(GW)


def test_upstream_echoing_the_key_is_scrubbed(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    gw = gateway({"OPENAI_BASE_URL": openai_upstream.url + "/v1", "OPENAI_API_KEY": CONFIGURED})
    from tests.upstreams.base import Fault

    openai_upstream.state.fail_next(Fault(401, {"error": {"message": f"Incorrect API key provided: {CONFIGURED}.",
                                                          "type": "invalid_request_error", "param": None,
                                                          "code": "invalid_api_key"}}))
    r = httpx.post(gw.base_url + "/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
    assert r.status_code == 401 and "Incorrect API key provided" in r.text
    gw.remember(r.text)
    gw.assert_secret_absent(CONFIGURED)


def test_check_config_masks_keys_and_models_lists_routes(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": CONFIGURED, "GATEWAY_API_KEYS": GW, "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "image_gateway", "check-config"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True).stdout
    assert CONFIGURED not in out and GW not in out
    assert "sk-...1111" in out and "gw-...4444" in out
    models = subprocess.run([sys.executable, "-m", "image_gateway", "models"], env=env, cwd=tmp_path,
                            capture_output=True, text=True, check=True).stdout
    assert "gpt-image-1" in models and "demo" in models and CONFIGURED not in models


def test_cookies_an_upstream_sets_are_not_sent_for_other_callers(gateway: GatewayFactory,
                                                                 openai_upstream: FakeServer) -> None:
    """One pooled session serves every caller: a cookie set on caller A's answer must not ride
    along on caller B's request (the session keeps no cookie jar)."""
    from tests.upstreams.base import Fault

    # By name, not IP: cookie jars ignore cookies from IP-address hosts (localhost is 127.0.0.1 too).
    gw = gateway({"OPENAI_BASE_URL": openai_upstream.url.replace("127.0.0.1", "localhost") + "/v1"})
    body = {"created": 1, "data": [{"b64_json": base64.b64encode(fake_openai.make_image("a", 8, 8)).decode()}]}
    openai_upstream.state.fail_next(Fault(status=200, body=body, headers={"Set-Cookie": "session=caller-a; Path=/"}))
    for key in (OWN, HEADER):
        client = openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
        client.images.generate(model="gpt-image-1", prompt="otter")
    last = fake_openai.last_request(openai_upstream.state)
    assert last.headers["authorization"] == f"Bearer {HEADER}" and "cookie" not in last.headers
    gw.assert_secret_absent(OWN, HEADER)
