"""Idempotency-Key: one upstream job per key and body, replayed or attached; 409 on a new body."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from typing import Any

import httpx
import openai

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.routing_util import UPSTREAM_KEY, log_events, metric, post
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

GW_KEY = "gw-idem-gateway-key-0123456789"
NO_RETRY = "router: {retries: 0}\n"


def _gw(gateway: GatewayFactory, fake: FakeServer, **kw: Any) -> GatewayProcess:
    yaml = NO_RETRY + f"providers:\n  openai: {{base_url: \"{fake.url}/v1\"}}\n"
    return gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "GATEWAY_API_KEY": GW_KEY, **kw.pop("env", {})},
                   config_yaml=yaml, **kw)


def _access(gw: GatewayProcess) -> list[dict[str, Any]]:
    return [x for x in log_events(gw, "request") if x.get("path") == "/v1/images/generations"]


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {GW_KEY}", "Idempotency-Key": key}


def test_same_key_same_body_replays_without_a_second_job(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    gw = _gw(gateway, a)
    body = {"model": "gpt-image-1", "prompt": "a lighthouse"}
    first = post(gw, body, _h("key-1"))
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    again = post(gw, body, _h("key-1"))
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["x-gateway-model"] == "gpt-image-1"
    assert a.state.count("/images") == 1

    other = post(gw, {**body, "prompt": "a different lighthouse"}, _h("key-1"))
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert a.state.count("/images") == 1
    assert post(gw, body, _h("key-2")).status_code == 200  # a new key is a new request
    assert post(gw, body, {"Authorization": f"Bearer {GW_KEY}"}).status_code == 200  # no key: no dedup
    assert a.state.count("/images") == 3
    m = httpx.get(gw.url + "/metrics").text
    assert metric(m, "gateway_idempotency_total", result="replayed") == 1
    assert metric(m, "gateway_idempotency_total", result="conflict") == 1
    gw.assert_secret_absent(UPSTREAM_KEY, GW_KEY)  # also checks the SQLite file under DATA_DIR


def test_concurrent_duplicate_attaches_to_the_running_job(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    gw = _gw(gateway, a)
    a.state.delay_s = 1.0
    body = {"model": "gpt-image-1", "prompt": "slow otter"}
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(post, gw, body, _h("same")) for _ in range(3)]
        results = [f.result() for f in futures]
    assert all(r.status_code == 200 for r in results)
    assert len({r.content for r in results}) == 1
    assert a.state.count("/images") == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in results) == ["", "true", "true"]
    gw.assert_secret_absent(UPSTREAM_KEY, GW_KEY)


def test_sdk_retry_after_client_timeout_creates_one_upstream_job(gateway: GatewayFactory,
                                                                  fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    gw = _gw(gateway, a)
    a.state.fail_next(fake_openai.slow(1.5))
    client = openai.OpenAI(base_url=gw.base_url, api_key=GW_KEY, max_retries=3, timeout=0.7)
    res = client.images.generate(model="gpt-image-1", prompt="patient otter",
                                 extra_headers={"Idempotency-Key": "sdk-retry-1"})
    gw.remember(res.model_dump_json())
    assert res.data and res.data[0].b64_json
    images = [r for r in a.state.requests if "/images" in r.path]
    assert len(images) == 1  # the SDK sent it more than once; the upstream saw it once
    wait_until(lambda: len(_access(gw)) >= 2, what="access log lines")
    seen = sorted(str(x.get("idempotency")) for x in _access(gw))
    assert seen[-1] == "new" and set(seen[:-1]) <= {"attached", "replayed"}, seen
    gw.assert_secret_absent(UPSTREAM_KEY, GW_KEY)


def test_finished_results_survive_a_restart_and_failures_that_billed_nothing_are_not_kept(
        gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    gw = _gw(gateway, a)
    body = {"model": "gpt-image-1", "prompt": "durable"}
    a.state.fail_next(fake_openai.server_error())
    assert post(gw, body, _h("k-restart")).status_code == 500  # retryable, nothing billed: not remembered
    first = post(gw, body, _h("k-restart"))
    assert first.status_code == 200 and a.state.count("/images") == 2
    gw.stop()
    rows = sqlite3.connect(gw.data_dir / "idempotency.sqlite3").execute("SELECT id FROM idempotency").fetchall()
    assert len(rows) == 1 and "k-restart" not in rows[0][0]  # stored under a hash

    gw2 = _gw(gateway, a, env={"DATA_DIR": str(gw.data_dir)})
    again = post(gw2, body, _h("k-restart"))
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert a.state.count("/images") == 2

    # A client error is an answer: it is replayed, not re-sent.
    a.state.fail_next(fake_openai.moderation_blocked())
    assert post(gw2, body, _h("k-400")).status_code == 400
    replay = post(gw2, body, _h("k-400"))
    assert replay.status_code == 400 and replay.headers["idempotent-replayed"] == "true"
    assert a.state.count("/images") == 3
    gw.assert_secret_absent(UPSTREAM_KEY, GW_KEY)
    gw2.assert_secret_absent(UPSTREAM_KEY, GW_KEY)
