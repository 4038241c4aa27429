"""REDIS_URL, the shared-limits half: Idempotency-Key, rate limits and breaker state across processes.

Real gateway processes on one real redis-server (tests/services.py), fake OpenAI upstreams behind
them. Every test scans Redis (every key and value), the logs, files and responses for the keys.
"""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.redis_util import assert_absent, client, commands_besides_the_fleet
from tests.routing_util import ADMIN_KEY, UPSTREAM_KEY, post
from tests.services import RedisServer
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

KEY_A = "gw-shared-key-a-0123456789abcdef"
KEY_B = "gw-shared-key-b-0123456789abcdef"
OWNER_SECRET = "owner-secret-shared-by-all-processes-0123"
IDEM_KEY = "idem-shared-7f3a9c"


def _env(redis_server: RedisServer, **extra: str) -> dict[str, str]:
    # Every process is configured alike (as behind a load balancer): one Redis, one owner secret.
    return {"REDIS_URL": redis_server.url, "TASK_OWNER_SECRET": OWNER_SECRET, "GATEWAY_API_KEYS": f"{KEY_A},{KEY_B}",
            "OPENAI_API_KEY": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY, "CONFIG_WATCH": "0", **extra}


def _yaml(fake: FakeServer, extra: str = "") -> str:
    return f"router: {{retries: 0}}\nproviders:\n  openai: {{base_url: \"{fake.url}/v1\"}}\n{extra}"


def _auth(key: str, **h: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **h}


def _no_leaks(redis_server: RedisServer, *gws: GatewayProcess) -> None:
    secrets = (KEY_A, KEY_B, UPSTREAM_KEY, ADMIN_KEY, OWNER_SECRET)
    assert_absent(redis_server, *secrets)
    for gw in gws:
        gw.assert_secret_absent(*secrets)


def _deployment(gw: GatewayProcess, route: str) -> dict[str, Any]:
    r = httpx.get(gw.url + "/admin/deployments", headers=_auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    dep: dict[str, Any] = r.json()["routes"][route][0]
    return dep


def test_one_idempotency_key_sent_to_two_processes_at_once_makes_one_upstream_job(
        gateway: GatewayFactory, fakes: list[FakeServer], redis_server: RedisServer) -> None:
    a, *_ = fakes
    a.state.delay_s = 1.0  # both requests are in flight together
    gws = [gateway(_env(redis_server), config_yaml=_yaml(a)) for _ in range(2)]
    body = {"model": "gpt-image-1", "prompt": "one lighthouse, two doors"}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(post, gw, body, _auth(KEY_A, **{"Idempotency-Key": IDEM_KEY})) for gw in gws]
        results = [f.result() for f in futures]
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    assert results[0].content == results[1].content
    assert a.state.count("/images") == 1
    assert sorted(r.headers.get("idempotent-replayed", "") for r in results) == ["", "true"]

    a.state.delay_s = 0.0
    later = post(gws[1], body, _auth(KEY_A, **{"Idempotency-Key": IDEM_KEY}))  # replayed from Redis
    assert later.status_code == 200 and later.content == results[0].content
    other = post(gws[0], {**body, "prompt": "another"}, _auth(KEY_A, **{"Idempotency-Key": IDEM_KEY}))
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    # Scoped to the caller: another key with the same Idempotency-Key runs its own job.
    assert post(gws[1], body, _auth(KEY_B, **{"Idempotency-Key": IDEM_KEY})).status_code == 200
    assert a.state.count("/images") == 2
    assert not any(IDEM_KEY.encode() in k for k in _keys(redis_server))  # named by a hash only
    _no_leaks(redis_server, *gws)


def _keys(redis_server: RedisServer) -> list[bytes]:
    return list(client(redis_server).scan_iter())


def test_a_claim_left_by_a_killed_process_runs_out_and_the_retry_runs(
        gateway: GatewayFactory, fakes: list[FakeServer], redis_server: RedisServer) -> None:
    a, *_ = fakes
    a.state.delay_s = 30.0
    env = _env(redis_server, TASK_LEASE_S="2")
    first, second = (gateway(env, config_yaml=_yaml(a)) for _ in range(2))
    body = {"model": "gpt-image-1", "prompt": "orphaned"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(post, first, body, _auth(KEY_A, **{"Idempotency-Key": "orphan"}), 60)
        wait_until(lambda: a.state.count("/images") == 1, what="the first request at the upstream")
        first.kill()
        a.state.delay_s = 0.0
        t0 = time.monotonic()
        r = post(second, body, _auth(KEY_A, **{"Idempotency-Key": "orphan"}))  # waits out the dead claim
    assert r.status_code == 200, r.text
    assert time.monotonic() - t0 < 10
    assert a.state.count("/images") == 2
    _no_leaks(redis_server, second)


def test_requests_per_minute_hold_across_three_processes(gateway: GatewayFactory, fakes: list[FakeServer],
                                                         redis_server: RedisServer) -> None:
    a, *_ = fakes
    yaml = _yaml(a, "limits:\n  keys:\n    - {key: '${LIMITED_KEY}', rpm: 6}\n")
    gws = [gateway(_env(redis_server, LIMITED_KEY=KEY_A), config_yaml=yaml) for _ in range(3)]
    body = {"model": "gpt-image-1", "prompt": "x"}
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, gws[i % 3], body, _auth(KEY_A)) for i in range(18)]
        codes = [f.result().status_code for f in futures]
    assert set(codes) == {200, 429}, codes
    assert 5 <= codes.count(200) <= 7, codes  # 6 per minute in total, not 6 per process
    refused = post(gws[2], body, _auth(KEY_A))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 10
    assert all(post(gw, body, _auth(KEY_B)).status_code == 200 for gw in gws)  # no limit of its own
    _no_leaks(redis_server, *gws)


def test_concurrency_slots_are_global_and_a_killed_process_gives_its_slot_back(
        gateway: GatewayFactory, fakes: list[FakeServer], redis_server: RedisServer) -> None:
    a, *_ = fakes
    a.state.delay_s = 30.0
    yaml = _yaml(a, "limits:\n  keys:\n    - {key: '${LIMITED_KEY}', concurrent: 1}\n")
    env = _env(redis_server, LIMITED_KEY=KEY_A, TASK_LEASE_S="2")
    one, two = (gateway(env, config_yaml=yaml) for _ in range(2))
    body = {"model": "gpt-image-1", "prompt": "x"}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(post, one, body, _auth(KEY_A), 60)
        wait_until(lambda: a.state.count("/images") == 1, what="the first request at the upstream")
        busy = post(two, body, _auth(KEY_A))
        assert busy.status_code == 429 and busy.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert_absent(redis_server, KEY_A, KEY_B, UPSTREAM_KEY)  # while the slot is held (released: gone)
        one.kill()  # its slot is never given back: it runs out with its lease
        a.state.delay_s = 0.0
        t0 = time.monotonic()
        wait_until(lambda: post(two, body, _auth(KEY_A)).status_code == 200, timeout=10, interval=0.2,
                   what="the dead process's slot to run out")
        assert time.monotonic() - t0 < 6
    assert post(two, body, _auth(KEY_A)).status_code == 200  # and each finished request gave its slot back
    two.assert_secret_absent(KEY_A, KEY_B, UPSTREAM_KEY, ADMIN_KEY, OWNER_SECRET)


def test_a_breaker_opened_by_one_process_is_honoured_by_another(gateway: GatewayFactory, fakes: list[FakeServer],
                                                                redis_server: RedisServer) -> None:
    a, *_ = fakes
    yaml = _yaml(a).replace("retries: 0", "retries: 0, cooldown_failures: 2, cooldown_s: 12")  # (room to start a third)
    first, second = (gateway(_env(redis_server), config_yaml=yaml) for _ in range(2))
    body = {"model": "gpt-image-1", "prompt": "x"}
    a.state.fail_next(fake_openai.server_error(), fake_openai.server_error())
    assert [post(first, body, _auth(KEY_A)).status_code for _ in range(2)] == [500, 500]
    wait_until(lambda: _deployment(second, "gpt-image-1")["state"] == "open", timeout=5, interval=0.05,
               what="the other process to learn of the open breaker")
    r = post(second, body, _auth(KEY_A))
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert a.state.count("/images") == 2  # the second process never sent to the dead upstream

    # The first process's probe succeeds after the cooldown: the second closes its breaker too.
    wait_until(lambda: post(first, body, _auth(KEY_A)).status_code == 200, timeout=30, interval=0.2,
               what="the probe to succeed")
    wait_until(lambda: _deployment(second, "gpt-image-1")["state"] == "closed", timeout=5, interval=0.05,
               what="the other process to close its breaker")
    # A process started now learns the state from Redis (the snapshot), not only from messages.
    a.state.fail_next(fake_openai.server_error(), fake_openai.server_error())
    assert [post(first, body, _auth(KEY_A)).status_code for _ in range(2)] == [500, 500]
    third = gateway(_env(redis_server), config_yaml=yaml)
    wait_until(lambda: _deployment(third, "gpt-image-1")["state"] == "open", timeout=5, interval=0.05,
               what="a new process to read the open breaker")
    _no_leaks(redis_server, first, second, third)


def test_a_capacity_pause_found_by_one_process_is_honoured_by_another(
        gateway: GatewayFactory, fakes: list[FakeServer], redis_server: RedisServer) -> None:
    a, *_ = fakes
    yaml = _yaml(a).replace("retries: 0", "retries: 0, max_retry_after_s: 0")
    first, second = (gateway(_env(redis_server), config_yaml=yaml) for _ in range(2))
    body = {"model": "gpt-image-1", "prompt": "x"}
    a.state.fail_next(fake_openai.rate_limited(retry_after="20"))
    assert post(first, body, _auth(KEY_A)).status_code == 429
    wait_until(lambda: _deployment(second, "gpt-image-1")["retry_in_s"] > 10, timeout=5, interval=0.05,
               what="the other process to pause the deployment")
    r = post(second, body, _auth(KEY_A))
    assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limit_exceeded", r.text
    assert 10 <= int(r.headers["retry-after"]) <= 20
    assert a.state.count("/images") == 1
    _no_leaks(redis_server, first, second)


def test_a_plain_request_makes_no_redis_round_trip(gateway: GatewayFactory, fakes: list[FakeServer],
                                                   redis_server: RedisServer) -> None:
    a, *_ = fakes
    yaml = _yaml(a, "limits:\n  keys:\n    - {key: '${LIMITED_KEY}', rpm: 1000}\n")
    gw = gateway(_env(redis_server, LIMITED_KEY=KEY_A), config_yaml=yaml)
    body = {"model": "gpt-image-1", "prompt": "x"}
    assert post(gw, body, _auth(KEY_B)).status_code == 200  # warm: anything once-only is done now

    # The task fleet renews leases and scans for orphans on its own connections (named, see
    # engine/redis_store.py) whatever the traffic; every other command is the requests'.
    plain = commands_besides_the_fleet(redis_server, lambda: [
        post(gw, body, _auth(KEY_B)).status_code for _ in range(20)])  # no limit for this key, no Idempotency-Key
    assert plain == []
    # The same count does see what a limited request costs (so the check above can fail).
    limited = commands_besides_the_fleet(redis_server, lambda: post(gw, body, _auth(KEY_A)).status_code)
    assert len(limited) >= 1, limited
    _no_leaks(redis_server, gw)


def test_redis_down_gives_503_to_what_needs_it_and_plain_requests_go_on(
        gateway: GatewayFactory, fakes: list[FakeServer], redis_server: RedisServer) -> None:
    a, *_ = fakes
    yaml = _yaml(a, "limits:\n  keys:\n    - {key: '${LIMITED_KEY}', rpm: 1000}\n")
    gw = gateway(_env(redis_server, LIMITED_KEY=KEY_A), config_yaml=yaml)
    body = {"model": "gpt-image-1", "prompt": "x"}
    assert post(gw, body, _auth(KEY_A)).status_code == 200
    redis_server.stop()
    for headers in (_auth(KEY_A), _auth(KEY_B, **{"Idempotency-Key": "while-down"})):
        t0 = time.monotonic()
        r = post(gw, body, headers)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "state_unavailable"
        assert time.monotonic() - t0 < 3  # never a hang
    assert post(gw, body, _auth(KEY_B)).status_code == 200  # a plain request needs no Redis
    assert a.state.count("/images") == 2
    redis_server.start()  # same port: the gateway reconnects by itself
    wait_until(lambda: post(gw, body, _auth(KEY_A)).status_code == 200, timeout=10, interval=0.2,
               what="the gateway to reach Redis again")
    assert post(gw, body, _auth(KEY_B, **{"Idempotency-Key": "after"})).status_code == 200
    _no_leaks(redis_server, gw)


def test_a_password_and_database_in_redis_url_are_used_and_never_logged(
        gateway: GatewayFactory, fakes: list[FakeServer], tmp_path: Path) -> None:
    a, *_ = fakes
    password = "redis-pass-0123456789abcdef"
    server = RedisServer(tmp_path / "redis-auth", password=password).start()
    try:
        url = server.url.removesuffix("/0") + "/2"
        yaml = _yaml(a, "limits:\n  keys:\n    - {key: '${LIMITED_KEY}', rpm: 1}\n")
        gw = gateway({**_env(server, LIMITED_KEY=KEY_A), "REDIS_URL": url}, config_yaml=yaml)
        body = {"model": "gpt-image-1", "prompt": "x"}
        assert [post(gw, body, _auth(KEY_A)).status_code for _ in range(2)] == [200, 429]
        r = redis.Redis.from_url(url, socket_timeout=5)
        assert any(k.startswith(b"igw:rl:") for k in r.scan_iter())  # in database 2, behind AUTH
        gw.assert_secret_absent(password, KEY_A, UPSTREAM_KEY)
    finally:
        server.stop()
