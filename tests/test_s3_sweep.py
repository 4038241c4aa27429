"""The sweep of a shared bucket runs in one process at a time: two sweepers on one real Redis and one
real bucket (moto) never both sweep a round; the holder keeps the lock, and another takes over once it
lets go. A local store is never locked: each machine's directory is its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from image_gateway.media.s3_store import S3ImageStore
from image_gateway.media.store import LocalImageStore
from image_gateway.media.sweeper import LOCK_KEY, Sweeper
from image_gateway.state.redis import connect
from tests.services import S3Server


@pytest.fixture
def bucket_store(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3ImageStore:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)  # (the standard chain, as in a deployment)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return S3ImageStore(s3_server.bucket, "images/", 3600.0, endpoint_url=s3_server.endpoint, region="us-east-1")


async def test_one_sweeper_at_a_time_then_takeover(bucket_store: S3ImageStore, s3_server: S3Server,
                                                   redis_server: Any) -> None:
    redis_a, redis_b = connect(redis_server.url), connect(redis_server.url)
    try:
        a = Sweeper(bucket_store, redis_a, instance="gw-a")
        b = Sweeper(bucket_store, redis_b, instance="gw-b")
        name = await bucket_store.put(b"\x89PNG\r\n\x1a\n....")
        rounds = await asyncio.gather(a.once(), b.once())
        assert sorted(r is None for r in rounds) == [False, True], rounds  # exactly one swept
        holder, other = (a, b) if rounds[0] is not None else (b, a)
        assert (await redis_a.get(LOCK_KEY)) == holder.token.encode()
        assert await holder.once() == 0  # the holder keeps sweeping (nothing is old enough yet)
        assert await other.once() is None
        assert s3_server.objects() == [f"images/{name}"]  # younger than the TTL: kept
        await holder.release()
        assert await other.once() == 0  # takes over at once
        assert (await redis_a.get(LOCK_KEY)) == other.token.encode()
        ttl_ms = await redis_a.pttl(LOCK_KEY)
        assert 0 < ttl_ms <= other.every_s * 3000  # a dead holder is replaced within about three rounds
    finally:
        await redis_a.aclose()
        await redis_b.aclose()


async def test_redis_down_skips_the_round(bucket_store: S3ImageStore, redis_server: Any) -> None:
    client = connect(redis_server.url)
    try:
        redis_server.stop()
        assert await Sweeper(bucket_store, client).once() is None  # logged; served images are still refused when old
    finally:
        await client.aclose()


async def test_a_local_store_is_never_locked(tmp_path: Path, redis_server: Any) -> None:
    client = connect(redis_server.url)
    try:
        store = LocalImageStore(tmp_path / "images", 0.0)
        store.ensure()
        store.save(b"\x89PNG\r\n\x1a\n....")
        one, two = Sweeper(store, client), Sweeper(store, client)
        assert one.redis is None and two.redis is None
        assert await one.once() == 1 and await two.once() == 0  # both sweep their own directory
        assert await client.exists(LOCK_KEY) == 0
    finally:
        await client.aclose()
