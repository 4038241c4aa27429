"""Capacity answers (a 429, Midjourney's code 23, our own full per-account queue) mean "not now", never
"broken": the deployment is paused until the upstream's Retry-After (or a short back-off when it named
none), other deployments and fallbacks serve meanwhile, the breaker counts health failures only, and a
caller nothing can serve gets the upstream's own 429 with a Retry-After no longer than what is left.
The gateway runs as a real process against the fake upstreams; waits are polls with deadlines."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import openai
import pytest

from image_gateway.errors import GatewayError
from image_gateway.providers.limits import QueueFull
from image_gateway.routing.health import CLOSED, HALF_OPEN, OPEN, Health
from image_gateway.routing.policy import Verdict, is_deployment_fault
from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.mj_util import client, done, mj_server, new_key, start_gateway, submit_async, wait_task
from tests.routing_util import ADMIN_KEY, UPSTREAM_KEY, metric, post
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

# The settings of the issue (and the defaults): three failures open the breaker for a minute.
ISSUE_ROUTER = "router: {retries: 2, cooldown_failures: 3, cooldown_s: 60}\n"
UPSTREAM_429 = fake_openai.RATE_LIMIT_MESSAGE


def _dalle(url: str, router: str = ISSUE_ROUTER) -> str:
    """A route with one deployment, as in the issue."""
    return router + f"""
routes:
  - name: dall-e-3
    deployments: [{{name: main, base_url: "{url}/v1", api_key: "${{OPENAI_KEY_MAIN}}"}}]
"""


def _breaker(gw: GatewayProcess, route: str) -> dict[str, object]:
    r = httpx.get(gw.url + "/admin/deployments", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    breaker: dict[str, object] = r.json()["routes"][route][0]
    return breaker


def _until_served(send: Callable[[], httpx.Response], within_s: float, check_busy: Callable[[httpx.Response], None],
                  served: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
                  ) -> tuple[httpx.Response, list[httpx.Response]]:
    """Send until `served` (polling, with a deadline); every other answer must pass `check_busy`."""
    busy: list[httpx.Response] = []

    def answered() -> httpx.Response | None:
        r = send()
        if served(r):
            return r
        check_busy(r)
        busy.append(r)
        return None

    r = wait_until(answered, within_s, interval=0.05, what="the request to be served")
    assert r is not None
    return r, busy


def _upstream_429(max_retry_after: int) -> Callable[[httpx.Response], None]:
    def check(r: httpx.Response) -> None:
        assert r.status_code == 429, f"{r.status_code} {r.text}"  # never 503: the upstream is not broken
        err = r.json()["error"]
        assert err["code"] == "rate_limit_exceeded" and err["message"] == UPSTREAM_429  # the upstream's own
        assert 1 <= int(r.headers["retry-after"]) <= max_retry_after
    return check


def test_429_with_retry_after_2_is_served_again_within_3_s(gateway: GatewayFactory,
                                                            openai_upstream: FakeServer) -> None:
    a = openai_upstream
    gw = gateway({"OPENAI_KEY_MAIN": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY}, config_yaml=_dalle(a.url))
    sdk = openai.OpenAI(base_url=gw.base_url, api_key="caller", max_retries=0, timeout=15)
    a.state.fail_next(*[fake_openai.rate_limited("2") for _ in range(3)])
    with pytest.raises(openai.RateLimitError) as ei:  # waited out two pauses, then the third 429 is passed on
        sdk.images.generate(model="dall-e-3", prompt="otter")
    last_429 = time.monotonic()
    gw.remember(ei.value.response.text)
    assert ei.value.response.json()["error"]["message"] == UPSTREAM_429  # the upstream's own answer
    assert ei.value.response.headers["retry-after"] == "2"
    assert a.state.count("/images") == 3
    state = _breaker(gw, "dall-e-3")
    assert state["state"] == "closed" and state["consecutive_failures"] == 0  # "not now" is not a failure

    res = sdk.images.generate(model="dall-e-3", prompt="otter")  # waits out what is left of the pause
    assert time.monotonic() - last_429 < 3.0
    gw.remember(res.model_dump_json())
    assert len(res.data or []) == 1
    assert a.state.count("/images") == 4  # nothing was sent during the pauses
    m = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    assert metric(m, "gateway_cooldowns_total", route="dall-e-3", deployment="main") == 0
    gw.assert_secret_absent(UPSTREAM_KEY, ADMIN_KEY)


def test_callers_get_the_upstreams_429_with_no_more_than_what_is_left(gateway: GatewayFactory,
                                                                       openai_upstream: FakeServer) -> None:
    a = openai_upstream
    # max_retry_after_s 0: the gateway waits for no pause, so every caller during one sees its 429.
    router = "router: {retries: 2, cooldown_failures: 3, cooldown_s: 60, max_retry_after_s: 0}\n"
    gw = gateway({"OPENAI_KEY_MAIN": UPSTREAM_KEY}, config_yaml=_dalle(a.url, router))
    a.state.fail_next(*[fake_openai.rate_limited("2") for _ in range(3)])
    last_429 = 0.0

    def send() -> httpx.Response:
        nonlocal last_429
        before = a.state.count("/images")
        r = post(gw, {"model": "dall-e-3", "prompt": "otter"}, timeout=10)
        if r.status_code == 429 and a.state.count("/images") > before:
            last_429 = time.monotonic()  # an answer the upstream gave just now
        return r

    served, busy = _until_served(send, 12.0, _upstream_429(2))
    assert time.monotonic() - last_429 < 3.0  # three pauses of 2 s, each honoured, none turned into 60 s
    assert served.headers["x-gateway-model"] == "dall-e-3"
    assert len(busy) > 6  # callers answered while the upstream was paused ...
    assert a.state.count("/images") == 4  # ... without asking it: once per pause, then the one served
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_a_paused_deployment_leaves_its_callers_to_the_fallback_meanwhile(gateway: GatewayFactory,
                                                                          fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    yaml = ISSUE_ROUTER + f"""
routes:
  - name: primary
    provider: openai
    upstream_model: dall-e-3
    deployments: [{{name: a, base_url: "{a.url}/v1"}}]
    fallbacks: [backup]
  - name: backup
    provider: openai
    deployments: [{{name: b, base_url: "{b.url}/v1"}}]
"""
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml)
    a.state.fail_next(fake_openai.rate_limited("2"))
    t0 = time.monotonic()
    r = post(gw, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 200 and r.headers["x-gateway-model"] == "backup", r.text
    assert time.monotonic() - t0 < 1.5  # not held back for the primary's pause
    r = post(gw, {"model": "primary", "prompt": "otter"})
    assert r.status_code == 200 and r.headers["x-gateway-model"] == "backup"
    assert a.state.count("/images") == 1  # skipped while paused

    def by_backup(r: httpx.Response) -> None:
        assert r.status_code == 200 and r.headers["x-gateway-model"] == "backup", r.text

    served, _ = _until_served(lambda: post(gw, {"model": "primary", "prompt": "otter"}), 3.0, by_backup,
                              served=lambda r: r.headers.get("x-gateway-model") == "primary")
    assert served.status_code == 200 and a.state.count("/images") == 2  # back once its pause ended
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_a_callers_own_rate_limit_neither_pauses_nor_breaks_the_deployment(gateway: GatewayFactory,
                                                                          openai_upstream: FakeServer) -> None:
    a = openai_upstream
    # No configured key: each caller's bearer token is its own OpenAI key.
    yaml = ISSUE_ROUTER + f"providers:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({"ADMIN_API_KEY": ADMIN_KEY}, config_yaml=yaml)
    mine, theirs = "sk-caller-one-0123456789abcdef", "sk-caller-two-0123456789abcdef"
    a.state.fail_next(*[fake_openai.rate_limited("1") for _ in range(3)])
    t0 = time.monotonic()
    r = post(gw, {"model": "dall-e-3", "prompt": "x"}, headers={"Authorization": f"Bearer {mine}"})
    assert r.status_code == 429 and r.headers["retry-after"] == "1", r.text
    assert time.monotonic() - t0 >= 1.9  # its own Retry-After honoured between its re-sends
    assert _breaker(gw, "dall-e-3")["consecutive_failures"] == 0
    r = post(gw, {"model": "dall-e-3", "prompt": "x"}, headers={"Authorization": f"Bearer {theirs}"})
    assert r.status_code == 200, r.text  # another caller's key is neither paused nor cut off
    assert a.state.count("/images") == 4
    gw.assert_secret_absent(mine, theirs, ADMIN_KEY)


def test_a_5xx_storm_still_opens_the_breaker_and_429s_neither_count_nor_reset(
        gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    a = openai_upstream
    router = "router: {retries: 0, cooldown_failures: 3, cooldown_s: 60}\n"
    gw = gateway({"OPENAI_KEY_MAIN": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY}, config_yaml=_dalle(a.url, router))
    a.state.fail_next(fake_openai.server_error(), fake_openai.rate_limited("1"), fake_openai.overloaded(),
                      fake_openai.server_error())
    assert post(gw, {"model": "dall-e-3", "prompt": "x"}).status_code == 500
    assert post(gw, {"model": "dall-e-3", "prompt": "x"}).status_code == 429
    assert _breaker(gw, "dall-e-3")["consecutive_failures"] == 1
    assert post(gw, {"model": "dall-e-3", "prompt": "x"}).status_code == 503  # after the pause: overloaded
    assert post(gw, {"model": "dall-e-3", "prompt": "x"}).status_code == 500  # third health failure in a row
    state = _breaker(gw, "dall-e-3")
    assert state["state"] == "open" and state["consecutive_failures"] == 3
    r = post(gw, {"model": "dall-e-3", "prompt": "x"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert a.state.count("/images") == 4  # open: not asked
    m = httpx.get(gw.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text
    assert metric(m, "gateway_cooldowns_total", route="dall-e-3", deployment="main") == 1
    gw.assert_secret_absent(UPSTREAM_KEY, ADMIN_KEY)


def _queue_full(code: str) -> Callable[[httpx.Response], None]:
    def check(r: httpx.Response) -> None:
        assert r.status_code == 429 and r.json()["error"]["code"] == code, f"{r.status_code} {r.text}"
        assert 1 <= int(r.headers["retry-after"]) <= 2  # the short back-off, not a minute
    return check


def test_midjourney_code_23_is_served_again_within_3_s(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, key, env={"ADMIN_API_KEY": ADMIN_KEY})
        state.next_codes.extend([23, 23, 23])  # midjourney-proxy's "queue full", no Retry-After
        t0 = time.monotonic()
        r = httpx.post(f"{gw.base_url}/images/generations", json={"model": "mj-v7", "prompt": "busy"}, timeout=10)
        gw.remember(r.text)
        _queue_full("upstream_queue_full")(r)
        assert time.monotonic() - t0 < 5.0 and state.submits == 3  # short back-offs between the re-sends
        last_23 = time.monotonic()
        assert _breaker(gw, "mj-v7")["consecutive_failures"] == 0
        task = submit_async(gw, {"model": "mj-v7", "prompt": "busy"})  # its job waits out the pause
        wait_until(lambda: state.submits == 4, 3.0 - (time.monotonic() - last_23), what="a submit after the pause")
        assert wait_task(gw, task["id"], done)["status"] == "succeeded"
        res = client(gw).images.generate(model="mj-v7", prompt="busy")  # and the next caller is served at once
        gw.remember(res.model_dump_json())
        assert len(res.data or []) == 1 and state.submits == 5
        gw.assert_secret_absent(key, ADMIN_KEY)


def test_a_full_account_queue_is_a_capacity_answer(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, key, provider="concurrency: 1, queue_size: 0",
                           env={"ADMIN_API_KEY": ADMIN_KEY})
        running = submit_async(gw, {"model": "mj-v7", "prompt": "one"})
        wait_task(gw, running["id"], lambda t: t["status"] == "in_progress")
        t0 = time.monotonic()
        r = httpx.post(f"{gw.base_url}/images/generations", json={"model": "mj-v7", "prompt": "two"}, timeout=10)
        gw.remember(r.text)
        _queue_full("queue_full")(r)
        assert time.monotonic() - t0 < 5.0 and state.submits == 1  # refused by the gateway's own queue
        full = time.monotonic()
        state.hang = False
        assert _breaker(gw, "mj-v7")["consecutive_failures"] == 0
        assert httpx.delete(f"{gw.base_url}/images/tasks/{running['id']}").status_code == 200
        task = submit_async(gw, {"model": "mj-v7", "prompt": "two"})  # its job waits out the pause
        wait_until(lambda: state.submits == 2, 3.0 - (time.monotonic() - full), what="a submit after the pause")
        assert wait_task(gw, task["id"], done)["status"] == "succeeded"
        gw.assert_secret_absent(key, ADMIN_KEY)


# ------------------------------------------------------------------------------------ the pieces alone


def test_what_counts_as_a_capacity_answer() -> None:
    assert GatewayError("x", status=429, code="rate_limit_exceeded").capacity
    assert GatewayError("x", status=429).capacity
    assert not GatewayError("x", status=429, code="insufficient_quota").capacity  # out of credit: not "later"
    assert not GatewayError("x", status=503, code="upstream_unavailable").capacity
    assert QueueFull("x").capacity and GatewayError("x", status=503, capacity=True).capacity
    busy = GatewayError("x", status=429, retryable=True)
    assert not is_deployment_fault(busy, Verdict.RETRY, key_is_configured=True)
    assert is_deployment_fault(GatewayError("x", status=500, retryable=True), Verdict.RETRY, True)
    again = busy.again_after(1.2)
    assert again is not busy and again.headers == {"Retry-After": "2"} and again.__traceback__ is None


def test_pause_honours_retry_after_else_backs_off_without_touching_the_breaker() -> None:
    h = Health()
    answer = GatewayError("busy", status=429)
    assert h.pause(100.0, 2.0, 0.5, 8.0, answer) == 102.0
    assert not h.available(101.9) and h.available(102.0) and h.state == CLOSED and h.failures == 0
    assert h.paused_answer(101.0) is answer and h.paused_answer(102.0) is None
    # No Retry-After: a short back-off, doubling while the answers follow one another, up to the cap.
    assert h.pause(200.0, None, 0.5, 8.0, answer) == 200.5
    assert h.pause(200.2, None, 0.5, 8.0, answer) == 200.5  # sent before the pause began: adds nothing
    assert h.pause(200.5, None, 0.5, 8.0, answer) == 201.5
    assert h.pause(201.6, None, 0.5, 8.0, answer) == 203.6
    for t in (203.6, 207.6, 215.6):
        h.pause(t, None, 0.5, 8.0, answer)
    assert h.not_before == 223.6  # capped at 8 s
    assert h.pause(400.0, None, 0.5, 8.0, answer) == 400.5  # long after: starts over
    # A half-open probe answered "not now" leaves the breaker half-open (the probe is released by the router).
    h2 = Health()
    h2.failure(0.0, 1, 10)
    assert h2.state == OPEN and h2.acquire(10.0) and h2.state == HALF_OPEN
    h2.pause(10.0, 1.0, 0.5, 8.0, answer)
    h2.release_probe()
    assert h2.state == HALF_OPEN and not h2.available(10.5) and h2.available(11.0)
