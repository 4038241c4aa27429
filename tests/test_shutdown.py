"""Graceful shutdown: SIGTERM stops accepting, and a running request still gets its answer."""

from __future__ import annotations

import concurrent.futures
import signal
import time

import httpx

from tests.conftest import GatewayFactory
from tests.routing_util import UPSTREAM_KEY, log_events, post
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until


def _refused(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.TransportError:
        return True
    return False


def test_sigterm_lets_a_running_request_finish(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    yaml = f"providers:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml, args=["--grace", "10"])
    a.state.fail_next(fake_openai.slow(1.5))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, gw, {"model": "gpt-image-1", "prompt": "finish me"})
        wait_until(lambda: a.state.count("/images") == 1, what="the request to reach the upstream")
        assert gw.proc is not None
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: _refused(gw.url + "/health"), what="the gateway to stop accepting")
        r = running.result(timeout=15)
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["b64_json"]
    # uvicorn re-raises the signal once it has shut down gracefully: killed by SIGTERM, after cleanup.
    assert gw.proc.wait(10) in (0, -signal.SIGTERM)
    stopped = log_events(gw, "gateway stopped")
    assert stopped and stopped[0]["inflight"] == 0
    assert time.monotonic() - t0 < 8  # it did not wait for the whole grace period
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_grace_period_bounds_the_wait(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    yaml = f"providers:\n  openai: {{base_url: \"{a.url}/v1\"}}\n"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY}, config_yaml=yaml, args=["--grace", "1"])
    a.state.fail_next(fake_openai.slow(20))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(post, gw, {"model": "gpt-image-1", "prompt": "too slow"})
        wait_until(lambda: a.state.count("/images") == 1, what="the request to reach the upstream")
        assert gw.proc is not None
        t0 = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        gw.proc.wait(10)
        assert time.monotonic() - t0 < 5
        try:
            r = running.result(timeout=10)
            assert r.status_code >= 500
        except httpx.TransportError:
            pass  # cut off: what a grace period means
