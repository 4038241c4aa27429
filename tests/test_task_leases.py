"""Poll leases in Redis, in-process: two RedisTaskStores stand for two gateway processes on one Redis
(a real redis-server). A lease is one process's; a stale holder's writes are refused (fencing)."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from image_gateway.engine.redis_store import RedisTaskStore
from image_gateway.engine.store import TaskRecord
from image_gateway.state.redis import StateUnavailable
from tests.waits import await_until


def _rec(task_id: str, status: str = "in_progress", progress: int = 10, **kw: Any) -> TaskRecord:
    now = time.time()
    return TaskRecord(id=task_id, model="mj-v7", route="mj-v7", status=status, created=now, updated=now,
                      progress=progress, handle={"id": "123"}, **kw)


async def _pair(url: str, lease_s: float) -> tuple[RedisTaskStore, RedisTaskStore]:
    a, b = RedisTaskStore(url, lease_s, "proc-a"), RedisTaskStore(url, lease_s, "proc-b")
    await a.open()
    await b.open()
    return a, b


async def test_a_stale_lease_holder_cannot_write(redis_server: Any) -> None:
    a, b = await _pair(redis_server.url, 0.3)
    lost: list[str] = []
    a.on_lost = lost.extend
    try:
        await a.save([_rec("t1")])
        assert a.holds("t1")
        await b.save([_rec("t1", progress=50)])  # a second "create" of a task that exists: refused
        assert not b.holds("t1") and (await b.get("t1") or _rec("x")).progress == 10
        assert await b.claim(["t1"]) == []  # a's lease is alive
        # a stalls past its lease (no renewal); b's scan takes the task over
        claimed = await await_until(b.claim, 5, interval=0.05, what="the lease to expire and be claimed")
        assert [r.id for r, _ in claimed] == ["t1"] and b.holds("t1")
        await b.save([_rec("t1", progress=68)])
        # a wakes up and writes what it had: refused, and a learns it lost the task
        await a.save([_rec("t1", status="succeeded", progress=100)])
        assert lost == ["t1"] and not a.holds("t1")
        got = await b.get("t1")
        assert got is not None and got.status == "in_progress" and got.progress == 68
        # the new holder's writes land; finishing releases the lease
        await b.save([_rec("t1", status="succeeded", progress=100)])
        assert not b.holds("t1")
        got = await a.get("t1")
        assert got is not None and got.status == "succeeded"
    finally:
        await a.close()
        await b.close()


async def test_renewal_keeps_a_lease_and_reports_one_taken(redis_server: Any) -> None:
    a, b = await _pair(redis_server.url, 0.4)
    lost: list[str] = []
    a.on_lost = lost.extend
    try:
        await a.save([_rec("t2"), _rec("t3")])
        end = time.monotonic() + 1.2

        async def renewed_past_three_leases() -> bool:  # (renewed every 0.1 s: nobody can claim them)
            assert await a.renew() == []
            assert await b.claim() == []
            return time.monotonic() > end

        await await_until(renewed_past_three_leases, 5, interval=0.1, what="three lease lengths")
        assert a.instances == 2 or a.instances == 1  # (b renews nothing, it has no heartbeat yet)
        # a graceful release: b claims at once, and a's next renewal of anything it kept still works
        assert await a.release(["t2"]) == 1
        assert [r.id for r, _ in await b.claim()] == ["t2"]
        assert await a.renew() == [] and lost == []
        # progress is fenced too: b's lands (live percent on the record), a's for t2 would not
        await b.progress([("t2", "in_progress", 37)])
        await a.progress([("t2", "in_progress", 99)])
        got = await a.get("t2")
        assert got is not None and got.progress == 37
    finally:
        await a.close()
        await b.close()


async def test_a_finished_task_keeps_its_lease_until_its_webhook_is_settled(redis_server: Any) -> None:
    a, b = await _pair(redis_server.url, 0.3)
    try:
        await a.save([_rec("t4", status="succeeded", progress=100, webhook_url="http://127.0.0.1:9/h",
                           webhook_status="pending")])
        assert a.holds("t4")  # the one process that may deliver it
        assert [r.webhook_status for r in await b.undelivered()] == ["pending"]
        await a.save([_rec("t4", status="succeeded", progress=100, webhook_url="http://127.0.0.1:9/h",
                           webhook_status="delivered")])
        assert not a.holds("t4") and await b.undelivered() == [] and await b.unfinished() == []
        assert await b.sweep(time.time() + 1) == 1 and await b.get("t4") is None
    finally:
        await a.close()
        await b.close()


async def test_redis_away_is_state_unavailable_and_a_failed_write_is_retried(redis_server: Any) -> None:
    a = RedisTaskStore(redis_server.url, 5, "proc-a")
    await a.open()
    try:
        await a.save([_rec("t5")])
        redis_server.stop()
        t0 = time.monotonic()
        try:
            await a.save([_rec("t5", progress=68)])
            raise AssertionError("a write with Redis down must fail")
        except StateUnavailable as e:
            assert e.status == 503 and e.code == "state_unavailable" and "redis://" not in e.message
        assert time.monotonic() - t0 < 5
        redis_server.start()
        await await_until(a.ping, 10, what="Redis back")
        assert await a.renew() == []  # Redis came back empty: the write that failed lands, lease taken back
        got = await a.get("t5")
        assert got is not None and got.progress == 68 and a.holds("t5")
        raw = aioredis.Redis.from_url(redis_server.url)
        await raw.flushall()  # emptied again with nothing to retry: renewal says which records to write again
        await raw.aclose()
        assert await a.renew() == ["t5"] and a.holds("t5")
    finally:
        await a.close()


async def test_records_carry_no_key(redis_server: Any) -> None:
    a = RedisTaskStore(redis_server.url, 5, "proc-a")
    await a.open()
    try:
        await a.save([_rec("t6", key_source="request", key_fp="f" * 64)])
        raw: Any = aioredis.Redis.from_url(redis_server.url)
        dump = b"".join([await raw.hget(k, "r") or b"" for k in await raw.keys("ig:t:*")])
        await raw.aclose()
        assert b"t6" in dump and b"api_key" not in dump
    finally:
        await a.close()


async def test_a_write_overtaken_by_a_newer_one_is_dropped_and_a_settled_task_never_leased_again(
        redis_server: Any) -> None:
    a = RedisTaskStore(redis_server.url, 5, "proc-a")
    await a.open()
    lost: list[str] = []
    a.on_lost = lost.extend
    try:
        old = _rec("t7", progress=37)
        await a.save([old])
        hook = {"webhook_url": "http://127.0.0.1:9/h"}
        await a.save([_rec("t7", status="succeeded", progress=100, webhook_status="pending", **hook)])
        await a.save([old])  # e.g. a write retried after a timeout, landing after the newer one
        got = await a.get("t7")
        assert got is not None and got.status == "succeeded" and a.holds("t7") and lost == []
        token = a.held["t7"]
        await a.save([_rec("t7", status="succeeded", progress=100, webhook_status="delivered", **hook)])
        assert not a.holds("t7")
        a.held["t7"] = token  # a renewal that raced the release: the settled task's lease is not taken back
        assert await a.renew() == [] and lost == ["t7"]
        raw: Any = aioredis.Redis.from_url(redis_server.url)
        assert await raw.exists("ig:l:t7") == 0 and await raw.zscore("ig:live", "t7") is None
        await raw.aclose()
    finally:
        await a.close()
