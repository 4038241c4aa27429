"""Tasks shared by equal gateway processes on one Redis (REDIS_URL): real processes, a real redis-server,
the fake midjourney-proxy. A process killed with -9 loses no task; any process answers for any task."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections import Counter
from typing import Any

import httpx
import redis

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.mj_util import done, imagine_ids, mj_server, new_key, release, submit_async, wait_task
from tests.upstreams.base import FakeServer, Fault
from tests.waits import wait_until

LEASE_S = 1.5


def fleet(gateway: GatewayFactory, n: int, srv: FakeServer, key: str, redis_url: str,
          lease_s: float = LEASE_S, concurrency: int = 16) -> list[GatewayProcess]:
    env = {"MJ_BASE_URL": srv.url, "MJ_API_KEY": key, "REDIS_URL": redis_url, "TASK_LEASE_S": str(lease_s),
           "TASK_OWNER_SECRET": "owner-secret-shared-by-the-fleet-0123456789", "PRIVATE_URL_ALLOWLIST": "127.0.0.1",
           "WEBHOOK_BACKOFF_S": "0.1"}
    yaml = f"providers:\n  midjourney: {{poll_interval_s: 0.2, concurrency: {concurrency}, queue_size: 64}}\n"
    return [gateway(env=env, config_yaml=yaml) for _ in range(n)]


def metric(gw: GatewayProcess, name: str) -> str:
    text = httpx.get(f"{gw.url}/metrics", timeout=10).text
    m = re.search(rf"^{name}(\{{[^}}]*\}})? (\S+)$", text, re.M)
    assert m is not None, f"{name} not in /metrics"
    return m.group(0)


def leases(gw: GatewayProcess) -> int:
    return int(float(metric(gw, "gateway_task_leases").rsplit(" ", 1)[1]))


def redis_dump(url: str) -> list[bytes]:
    """Every key in Redis and every value under it (strings, hashes, sets, sorted sets, lists, streams)."""
    r: Any = redis.Redis.from_url(url)
    out: list[bytes] = []
    for k in r.scan_iter(count=1000):
        kind = r.type(k)
        values: list[Any] = [k]
        if kind == b"string":
            values.append(r.get(k))
        elif kind == b"hash":
            values += [b for kv in r.hgetall(k).items() for b in kv]
        elif kind == b"zset":
            values += [m for m, _ in r.zrange(k, 0, -1, withscores=True)]
        elif kind == b"set":
            values += list(r.smembers(k))
        elif kind == b"list":
            values += r.lrange(k, 0, -1)
        elif kind == b"stream":
            values += [repr(e) for e in r.xrange(k)]
        out += [v if isinstance(v, bytes) else str(v).encode() for v in values]
    r.close()
    return out


def assert_no_key_anywhere(key: str, url: str, gws: list[GatewayProcess]) -> None:
    dump = redis_dump(url)
    assert dump, "Redis holds nothing: the scan scanned nothing"
    assert not any(key.encode() in v for v in dump), "the key was written to Redis"
    for gw in gws:
        gw.assert_secret_absent(key)


def test_kill_9_of_one_of_three_loses_no_task_and_repeats_nothing(gateway: GatewayFactory, redis_server: Any,
                                                                    hook: FakeServer) -> None:
    key = new_key()
    with mj_server(hang=True, secret=key) as (srv, state):
        gws = fleet(gateway, 3, srv, key, redis_server.url)
        body = {"model": "mj-v7", "webhook_url": f"{hook.url}/hook"}
        ids = [submit_async(gws[i % 3], {**body, "prompt": f"fleet {i}"})["id"] for i in range(30)]
        wait_until(lambda: state.submits == 30, 20, what="all 30 accepted upstream")
        wait_until(lambda: [leases(g) for g in gws] == [10, 10, 10], 10, what="each process polling its own ten")
        victim, survivors = gws[1], [gws[0], gws[2]]
        victim.kill()
        killed_at = time.monotonic()
        # The victim's ten are taken over within the lease and a scan; the survivors then hold all 30.
        wait_until(lambda: sum(leases(g) for g in survivors) == 30, LEASE_S + 5, what="the takeover")
        assert time.monotonic() - killed_at < LEASE_S + 3
        release(state)
        for task_id in ids:
            for gw in survivors:  # readable from every surviving process
                t = wait_task(gw, task_id, done, timeout=30)
                assert t["status"] == "succeeded" and t["result"]["data"], t
        assert state.submits == 30 and len(imagine_ids(state)) == 30  # none submitted twice
        wait_until(lambda: len(hook.state.requests) >= 30, 15, what="thirty webhooks")
        wait_until(lambda: sum(leases(g) for g in survivors) == 0, 10, what="every lease released")
        deliveries = Counter(r.json["id"] for r in hook.state.requests)
        assert deliveries == Counter(ids), deliveries  # one delivery each
        assert_no_key_anywhere(key, redis_server.url, gws)


def _events(gw: GatewayProcess, task_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with httpx.stream("GET", f"{gw.base_url}/images/tasks/{task_id}/events", timeout=30) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line == "data: [DONE]":
                break
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    gw.remember(json.dumps(events))
    return events


def test_events_and_cancel_from_a_process_that_does_not_poll_the_task(gateway: GatewayFactory,
                                                                      redis_server: Any) -> None:
    key = new_key()
    with mj_server(step_s=0.3, progress_steps=[10, 25, 40, 55, 70, 85], secret=key) as (srv, state):
        a, b = fleet(gateway, 2, srv, key, redis_server.url)
        task = submit_async(a, {"model": "mj-v7", "prompt": "aurora"})
        wait_until(lambda: leases(a) == 1, 10, what="A polling the task")
        assert leases(b) == 0
        events = _events(b, task["id"])
        progress = [e["progress"] for e in events if e["type"] == "image.task.progress"]
        assert progress == sorted(progress) and len({10, 25, 40, 55, 70, 85} & set(progress)) >= 3, events
        assert events[-1]["type"] == "image.task.succeeded" and events[-1]["task"]["result"]["data"]
        assert leases(b) == 0  # B only listened

        # DELETE on B reaches A, the poller, which cancels upstream.
        state.hang = True
        other = submit_async(a, {"model": "mj-v7", "prompt": "to be cancelled"})
        wait_until(lambda: leases(a) == 1 and len(imagine_ids(state)) == 2, 10, what="A polling the second")
        r = httpx.delete(f"{b.base_url}/images/tasks/{other['id']}", timeout=15)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        (upstream,) = [t for t in imagine_ids(state) if state.tasks[t].prompt.startswith("to be cancelled")]
        wait_until(lambda: state.status_of(upstream) == "CANCEL", 10, what="the upstream cancel")
        assert wait_task(a, other["id"], done)["status"] == "cancelled"
        assert_no_key_anywhere(key, redis_server.url, [a, b])


def test_redis_away_is_503_and_ready_false_then_everything_resumes(gateway: GatewayFactory,
                                                                   redis_server: Any) -> None:
    key = new_key()
    with mj_server(hang=True, secret=key) as (srv, state):
        a, b = fleet(gateway, 2, srv, key, redis_server.url)
        task = submit_async(a, {"model": "mj-v7", "prompt": "through the outage"})
        wait_until(lambda: leases(a) == 1 and state.submits == 1, 10, what="A polling the task")
        assert httpx.get(f"{a.url}/ready", timeout=5).status_code == 200
        r = redis.Redis.from_url(redis_server.url)
        r.save()  # (the test server keeps no snapshot of its own: this one is loaded when it starts again)
        r.close()
        redis_server.stop()

        t0 = time.monotonic()
        r1 = httpx.post(f"{b.base_url}/images/generations", json={"model": "mj-v7", "prompt": "no state"},
                        headers={"Prefer": "respond-async"}, timeout=10)
        r2 = httpx.get(f"{b.base_url}/images/tasks/{task['id']}", timeout=10)  # a task B does not poll
        for resp in (r1, r2):
            b.remember(resp.text)
            assert resp.status_code == 503, resp.text
            assert resp.json()["error"]["code"] == "state_unavailable"
        assert time.monotonic() - t0 < 8  # quick answers, no hang
        for gw in (a, b):
            ready = httpx.get(f"{gw.url}/ready", timeout=10)
            assert ready.status_code == 503 and ready.json()["status"] == "not_ready"
        release(state)  # the task finishes upstream while Redis is away; A keeps its result for later

        redis_server.start()
        wait_until(lambda: httpx.get(f"{b.url}/ready", timeout=5).status_code == 200, 15, what="B ready again")
        for gw in (a, b):
            t = wait_task(gw, task["id"], done, timeout=20)
            assert t["status"] == "succeeded" and t["result"]["data"], t
        later = submit_async(b, {"model": "mj-v7", "prompt": "after the outage"})
        assert wait_task(a, later["id"], done, timeout=20)["status"] == "succeeded"
        assert state.submits == 2
        assert_no_key_anywhere(key, redis_server.url, [a, b])


def test_a_graceful_stop_hands_its_tasks_over_at_once_and_reload_keeps_them(gateway: GatewayFactory,
                                                                             redis_server: Any) -> None:
    key = new_key()
    with mj_server(hang=True, secret=key) as (srv, state):
        a, b = fleet(gateway, 2, srv, key, redis_server.url, lease_s=30)  # expiry cannot explain a fast takeover
        ids = [submit_async(a, {"model": "mj-v7", "prompt": f"handed over {i}"})["id"] for i in range(4)]
        wait_until(lambda: leases(a) == 4 and state.submits == 4, 10, what="A polling four")
        assert b.proc is not None
        os.kill(b.proc.pid, signal.SIGHUP)  # a hot reload on B: per process, nothing shared is touched
        wait_until(lambda: metric(b, "gateway_config_generation").endswith(" 1.0"), 10, what="B reloaded")
        assert metric(b, "gateway_instance").startswith('gateway_instance{instance="test-')
        t0 = time.monotonic()
        a.stop()  # SIGTERM: a graceful shutdown
        assert any(line.get("msg") == "gateway stopped" for line in a.log_lines())
        wait_until(lambda: leases(b) == 4, 10, what="B holding A's tasks")
        assert time.monotonic() - t0 < 10  # released on the way out, not left to expire (30 s)
        release(state)
        for task_id in ids:
            assert wait_task(b, task_id, done, timeout=20)["status"] == "succeeded"
        assert state.submits == 4
        assert_no_key_anywhere(key, redis_server.url, [a, b])


def test_a_takeover_submits_what_was_never_sent_and_never_resends_a_submit_under_way(
        gateway: GatewayFactory, redis_server: Any) -> None:
    key = new_key()
    with mj_server(hang=True, secret=key) as (srv, state):
        (a,) = fleet(gateway, 1, srv, key, redis_server.url, concurrency=1)  # one upstream slot on A
        (b,) = fleet(gateway, 1, srv, key, redis_server.url)
        state.fail_next(Fault(delay_s=60, passthrough=True, match="/submit/imagine"))  # its answer never comes
        unknown = submit_async(a, {"model": "mj-v7", "prompt": "maybe billed"})
        wait_until(lambda: state.count("/submit/imagine") == 1, 10, what="the first submit upstream")
        queued = [submit_async(a, {"model": "mj-v7", "prompt": f"queued {i}"}) for i in range(2)]
        for q in queued:  # waiting for A's slot: never sent
            assert wait_task(b, q["id"], lambda t: True)["status"] == "queued"
        wait_until(lambda: leases(a) == 3, 10, what="A holding all three")
        assert state.count("/submit/imagine") == 1
        a.kill()
        t = wait_task(b, unknown["id"], done, timeout=LEASE_S + 10)
        assert t["status"] == "failed" and t["error"]["code"] == "submit_outcome_unknown", t
        release(state)
        for q in queued:
            assert wait_task(b, q["id"], done, timeout=20)["status"] == "succeeded"
        assert state.count("/submit/imagine") == 3  # nothing sent twice
        assert_no_key_anywhere(key, redis_server.url, [a, b])
