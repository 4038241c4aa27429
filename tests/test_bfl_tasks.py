"""BFL as an async task provider, through real gateway processes: `Prefer: respond-async`, a signed webhook
with a re-hosted result, kill -9 and restart resuming the poll of the stored polling_url (never a second
submit), cancel, and the key in no file, log or answer."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.mj_util import done, submit_async, wait_task
from tests.upstreams import fake_bfl
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_bfl import BflState
from tests.waits import holds_for, wait_until

KEY = "bfl-SECRET-task-77aa88bb99cc"
CONFIG = "router: {retries: 0}\nproviders:\n  bfl: {poll_interval_s: 0.05}\n"


@pytest.fixture
def bfl() -> Iterator[FakeServer]:
    srv = fake_bfl.start(BflState(api_key=KEY, steps=3))
    yield srv
    srv.stop()


def st(srv: FakeServer) -> BflState:
    assert isinstance(srv.state, BflState)
    return srv.state


def start(gateway: GatewayFactory, bfl: FakeServer, **env: str) -> GatewayProcess:
    return gateway(env={"BFL_API_KEY": KEY, "BFL_BASE_URL": bfl.url, **env}, config_yaml=CONFIG)


def test_respond_async_then_a_signed_webhook_with_a_rehosted_url(gateway: GatewayFactory, bfl: FakeServer,
                                                                 hook: FakeServer) -> None:
    secret = "whsec-bfl-0123456789abcdef"
    gw = start(gateway, bfl, WEBHOOK_SECRET=secret, PRIVATE_URL_ALLOWLIST="127.0.0.1")
    task = submit_async(gw, {"model": "flux-kontext-pro", "prompt": "a lighthouse", "size": "1536x1024",
                             "response_format": "url", "webhook_url": f"{hook.url}/hook"})
    assert task["status"] in ("queued", "in_progress")
    wait_until(lambda: hook.state.requests, timeout=15, what="the webhook")
    (delivery,) = hook.state.requests
    body = delivery.json
    assert body["id"] == task["id"] and body["status"] == "succeeded"
    expected = "sha256=" + hmac.new(secret.encode(), delivery.raw, hashlib.sha256).hexdigest()
    assert delivery.headers["x-gateway-signature"] == expected
    url = body["result"]["data"][0]["url"]
    assert url.startswith(gw.url + "/images/"), url
    st(bfl).expire()
    assert httpx.get(url).status_code == 200  # BFL's own sample URL is gone; ours lives IMAGE_TTL_S
    assert st(bfl).submits == 1
    gw.remember(delivery.raw.decode())
    gw.assert_secret_absent(KEY, secret)


def test_kill_9_then_restart_resumes_polling_without_a_second_submit(gateway: GatewayFactory,
                                                                     bfl: FakeServer) -> None:
    st(bfl).hang = True
    gw = start(gateway, bfl)
    task = submit_async(gw, {"model": "flux-2-pro", "prompt": "a slow river", "response_format": "b64_json"})
    wait_task(gw, task["id"], lambda t: t["status"] == "in_progress")
    wait_until(lambda: st(bfl).polls >= 2, what="polling to start")
    gw.kill()
    polls = st(bfl).polls
    st(bfl).hang = False
    gw.start()
    t = wait_task(gw, task["id"], done, timeout=30)
    assert t["status"] == "succeeded" and t["result"]["data"][0]["b64_json"], t
    assert st(bfl).polls > polls and st(bfl).submits == 1  # the stored polling_url polled again, not resubmitted
    gw.assert_secret_absent(KEY)


def test_cancel_ends_the_task_and_its_polling(gateway: GatewayFactory, bfl: FakeServer) -> None:
    st(bfl).hang = True
    gw = start(gateway, bfl)
    task = submit_async(gw, {"model": "flux-dev", "prompt": "forever"})
    wait_task(gw, task["id"], lambda t: t["status"] == "in_progress")
    r = httpx.delete(f"{gw.base_url}/images/tasks/{task['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert wait_task(gw, task["id"], done)["status"] == "cancelled"
    polls = st(bfl).polls
    holds_for(lambda: st(bfl).polls <= polls + 1, 0.5, what="no more polls")  # ten intervals; one may be in flight
    gw.assert_secret_absent(KEY)
