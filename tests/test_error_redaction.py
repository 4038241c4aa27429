"""An upstream error that echoes the key, in any field (message, type, param, code) or in a header
the gateway relays (Retry-After, retry-after-ms), reaches no caller, log line or file: answered
at once, streamed, or stored in a task. Real gateway process, fake OpenAI upstream."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import openai
import pytest

from image_gateway.errors import GatewayError, scrub
from tests.conftest import GatewayFactory
from tests.upstreams.base import FakeServer, Fault
from tests.waits import wait_until

CONFIGURED = "sk-configured-echo-aaaa11112222"
OWN = "caller0own0key0without0a0prefix9876"  # not key-shaped: only scrubbing by value catches it
GW = "gw-redaction-test-bbbb33334444"


def echo(key: str, status: int = 400) -> Fault:
    body = {"error": {"message": f"Incorrect API key provided: {key}.", "type": f"invalid_request_error:{key}",
                      "param": key, "code": f"bad_key_{key}"}}
    return Fault(status, body, headers={"Retry-After": key, "retry-after-ms": f"{key}ms", "x-echo": key})


def _check(err: dict[str, Any], key: str) -> None:
    assert err["param"] == "[redacted]" and err["code"] == "bad_key_[redacted]"
    assert err["type"] == "invalid_request_error:[redacted]"
    assert err["message"] == "Incorrect API key provided: [redacted]."
    assert key not in str(err)


@pytest.mark.parametrize("which", ["configured", "own"])
def test_key_echoed_in_every_field_is_redacted(gateway: GatewayFactory, openai_upstream: FakeServer,
                                               which: str) -> None:
    key = CONFIGURED if which == "configured" else OWN
    gw = gateway({"OPENAI_BASE_URL": openai_upstream.url + "/v1", "OPENAI_API_KEY": CONFIGURED,
                  "GATEWAY_API_KEY": GW}, config_yaml="router: {retries: 0}\n")
    headers = {"Authorization": f"Bearer {GW}", **({"X-Provider-Key": OWN} if which == "own" else {})}
    body = {"model": "gpt-image-1", "prompt": "an otter"}
    state = openai_upstream.state

    state.fail_next(echo(key))  # answered at once
    r = httpx.post(gw.base_url + "/images/generations", json=body, headers=headers)
    gw.remember(r.text, str(r.headers))
    assert r.status_code == 400
    _check(r.json()["error"], key)
    assert r.headers["retry-after"] == "[redacted]" and r.headers["retry-after-ms"] == "[redacted]ms"
    assert all(key not in v for v in r.headers.values())

    state.fail_next(echo(key))  # streamed
    r = httpx.post(gw.base_url + "/images/generations", json={**body, "stream": True}, headers=headers)
    gw.remember(r.text, str(r.headers))
    assert "bad_key_[redacted]" in r.text and key not in r.text

    state.fail_next(echo(key))  # from a chat client
    r = httpx.post(gw.base_url + "/chat/completions", headers=headers,
                   json={"model": "gpt-image-1", "enhance": False, "messages": [{"role": "user", "content": "otter"}]})
    gw.remember(r.text, str(r.headers))
    assert r.status_code == 400
    _check(r.json()["error"], key)

    state.fail_next(echo(key, status=500))  # a task: the error is stored, then read back
    r = httpx.post(gw.base_url + "/images/generations", json=body, headers={**headers, "Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    url = f"{gw.base_url}/images/tasks/{r.json()['id']}"
    wait_until(lambda: httpx.get(url, headers=headers).json()["status"] == "failed", 10, what="the task to fail")
    task = httpx.get(url, headers=headers)
    gw.remember(r.text, task.text)
    _check(task.json()["error"], key)

    state.fail_next(echo(key))  # the official SDK
    client = openai.OpenAI(base_url=gw.base_url, api_key=GW, max_retries=0,
                           default_headers={"X-Provider-Key": OWN} if which == "own" else None)
    with pytest.raises(openai.BadRequestError) as info:
        client.images.generate(model="gpt-image-1", prompt="an otter")
    assert info.value.code == "bad_key_[redacted]" and info.value.param == "[redacted]"
    gw.remember(str(info.value), info.value.response.text)

    gw.stop()  # the log is complete, the task database closed
    gw.assert_secret_absent(key, GW)


def test_scrub_covers_every_field_and_leaves_the_original_of_a_copy_alone() -> None:
    e = GatewayError(f"no {OWN}", type=f"t {OWN}", code=f"c {OWN}", param=OWN, headers={"Retry-After": OWN})
    c = scrub(copy.copy(e), [None, "", OWN])
    assert c.body() == {"error": {"message": "no [redacted]", "type": "t [redacted]", "param": "[redacted]",
                                  "code": "c [redacted]"}}
    assert c.headers == {"Retry-After": "[redacted]"} and OWN not in str(c) and OWN not in repr(c)
    assert e.headers == {"Retry-After": OWN}  # the copy got its own headers
    # Key-shaped text is scrubbed even when the key is not among the secrets given.
    assert scrub(GatewayError("x", param="sk-abcdefgh12345678")).param == "sk-[redacted]"
