"""Reading a test's own Redis from the outside: every key and value (leak scans), command counts."""

from __future__ import annotations

import time
from collections.abc import Callable
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


def commands_besides_the_fleet(server: RedisServer, action: Callable[[], object]) -> list[str]:
    """The commands Redis received while `action` ran (MONITOR), except those of the gateways' task
    fleets (connections named FLEET_CLIENT_NAME) and this helper's own."""
    from image_gateway.state.redis import FLEET_CLIENT_NAME

    r = client(server)
    with r.monitor() as m:  # type: ignore[no-untyped-call]
        action()
        marker = f"monitor-end-{time.monotonic_ns()}"
        client(server).echo(marker)
        seen: list[tuple[str, str]] = []
        while True:
            cmd = m.next_command()
            if marker in cmd["command"]:
                break
            if cmd["client_address"] != "lua":  # (commands a script runs inside Redis: no round trip)
                seen.append((f"{cmd['client_address']}:{cmd['client_port']}", cmd["command"]))
    names = {c["addr"]: c.get("name", "") for c in r.client_list()}
    ignored = ("PING", "CLIENT SETNAME", "HELLO", "CLIENT SETINFO", "ECHO")
    return [c for addr, c in seen if names.get(addr) != FLEET_CLIENT_NAME and not c.upper().startswith(ignored)]
