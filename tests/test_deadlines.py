"""The shared deadline sweeper for synchronous calls (engine/deadlines.py), in process and end to end."""

from __future__ import annotations

import asyncio
import time

import httpx

from image_gateway.engine.deadlines import Deadlines
from tests.conftest import GatewayFactory
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import await_until


async def _watched(d: Deadlines, seconds: float, deadline_in: float) -> str:
    loop = asyncio.get_running_loop()
    task = d.enter(loop.time() + deadline_in)
    try:
        await asyncio.sleep(seconds)
        return "done"
    except asyncio.CancelledError:
        if d.expired(task):
            return "deadline"
        raise
    finally:
        d.leave(task)


async def test_expired_call_is_cancelled_and_told_apart_from_a_caller_cancel() -> None:
    d = Deadlines(tick_s=0.02)
    t0 = time.monotonic()
    assert await _watched(d, 5, 0.1) == "deadline"
    assert time.monotonic() - t0 < 1
    assert await _watched(d, 0.05, 5) == "done"
    # Someone else's cancel stays a cancel.
    task = asyncio.create_task(_watched(d, 5, 5))
    await await_until(lambda: len(d._due) == 1, what="the call to be watched")
    task.cancel()
    try:
        await task
        raise AssertionError("expected CancelledError")
    except asyncio.CancelledError:
        pass
    # Many calls at once: only the late ones expire, and the sweeper stops when none are left.
    results = await asyncio.gather(*(_watched(d, 0.3 if i % 2 else 0.01, 0.15) for i in range(20)))
    assert results.count("deadline") == 10 and results.count("done") == 10
    await await_until(lambda: d._sweeper is None, what="the sweeper to stop")


def test_route_deadline_gives_504_for_a_sync_upstream(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    key = "sk-deadline-test-key-123456789"
    yaml = "routes:\n  - {name: gpt-image-1, deadline_s: 0.5}\nrouter: {retries: 0}\n"
    gw = gateway({"OPENAI_API_KEY": key, "OPENAI_BASE_URL": openai_upstream.url + "/v1"}, config_yaml=yaml)
    openai_upstream.state.fail_next(fake_openai.slow(4))
    t0 = time.monotonic()
    r = httpx.post(gw.base_url + "/images/generations", json={"model": "gpt-image-1", "prompt": "x"}, timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout", r.text
    assert time.monotonic() - t0 < 3
    ok = httpx.post(gw.base_url + "/images/generations", json={"model": "gpt-image-1", "prompt": "y"}, timeout=10)
    assert ok.status_code == 200
    gw.remember(r.text, ok.text)
    gw.assert_secret_absent(key)
