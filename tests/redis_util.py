"""Reading a test's own Redis from the outside: every key and value (leak scans), command counts."""

from __future__ import annotations

from typing import Any, cast

import redis

from tests.services import RedisServer


def client(server: RedisServer) -> redis.Redis:
    return redis.Redis.from_url(server.url, socket_timeout=5)


def everything(server: RedisServer) -> list[bytes]:
    """Every key and every value in the database, each as bytes (strings, hashes, sets, zsets, lists)."""
    r = client(server)
    out: list[Any] = []
    for key in r.scan_iter(count=500):
        out.append(key)
        kind = r.type(key)
        if kind == b"string":
            out.append(r.get(key))
        elif kind == b"hash":
            for f, v in r.hgetall(key).items():
                out += [f, v]
        elif kind == b"zset":
            out += [m for m, _ in cast(list[tuple[bytes, float]], r.zrange(key, 0, -1, withscores=True))]
        elif kind == b"set":
            out += list(r.smembers(key))
        elif kind == b"list":
            out += r.lrange(key, 0, -1)
        elif kind == b"stream":
            for _id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], r.xrange(key)):
                out += [*fields.keys(), *fields.values()]
    return [x if isinstance(x, bytes) else str(x).encode() for x in out if x is not None]


def assert_absent(server: RedisServer, *secrets: str) -> None:
    blobs = everything(server)
    assert blobs, "nothing in Redis: the scan would prove nothing"
    for s in secrets:
        assert s, "empty secret"
        for b in blobs:
            assert s.encode() not in b, f"secret {s[:6]}... stored in Redis"


def command_calls(r: redis.Redis) -> dict[str, int]:
    """INFO commandstats: calls per command since the server started (`r`: one client kept for the
    whole count, so its own connection's HELLO is counted once, before)."""
    stats = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
