"""Deployments' breaker and capacity-pause state shared between gateway processes (REDIS_URL).

When one process opens a deployment's breaker, takes a capacity answer's pause (the deployment's
own key was told "not now"), or closes the breaker again after a good probe, it publishes that
change (one PUBLISH, plus the current state in a hash for processes that start later). Every
process listens on one pub/sub connection and applies what others publish to its own Health
objects, so a dead or rate-limited upstream found by one process is skipped by all within
milliseconds. Requests never read Redis for this: routing keeps using its local Health, and
only a state change (rare, and only on a failure path or a probe's success) writes.

A deployment is named across processes by a hash of its route, label and base URL (never a key).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..errors import GatewayError
from .health import CLOSED, HALF_OPEN, OPEN

if TYPE_CHECKING:
    from .deployments import Deployment, Pool

log = logging.getLogger("image_gateway.routing")

CHANNEL = b"igw:health"
SNAPSHOT = b"igw:health:state"  # hash: deployment id → its last change (for processes that start later)


class Change(msgspec.Struct, frozen=True):
    dep: str  # deployment id (see above)
    kind: str  # "open" | "pause" | "closed"
    seconds: float  # how long the open/pause lasts from `at`
    at: float  # wall-clock time it was published
    origin: str  # the publishing process
    status: int = 0  # a pause: the capacity answer's status and code (its text is not shared)
    code: str | None = None


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Change)


def dep_id(d: Deployment) -> str:
    return hashlib.sha256(f"{d.route}\0{d.label}\0{d.endpoint.settings.base_url}".encode()).hexdigest()[:24]


class HealthSync:
    def __init__(self, client: aioredis.Redis, pool: Callable[[], Pool]) -> None:
        self.r = client
        self.pool = pool  # the current Pool (a reload swaps it)
        self.me = os.urandom(6).hex()
        self._index: tuple[int, dict[str, Deployment]] = (0, {})
        self._tasks: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._told: dict[int, float] = {}  # deployment → end of the last pause published (loop time)
        self.applied = 0  # changes from other processes applied here (tests, /metrics later)

    # -- publishing (called from routing/attempt.py on a change) --

    def opened(self, d: Deployment, cooldown_s: float) -> None:
        self._publish(Change(dep_id(d), "open", cooldown_s, time.time(), self.me))

    def paused(self, d: Deployment, now: float, until: float, answer: GatewayError) -> None:
        """A pause until loop time `until`; told again only when it reaches past what was told already
        (a burst of 429s is one message, not one per answer)."""
        if until <= self._told.get(id(d), 0.0) + 0.5:
            return
        self._told[id(d)] = until
        self._publish(Change(dep_id(d), "pause", until - now, time.time(), self.me, answer.status, answer.code))

    def closed(self, d: Deployment) -> None:
        self._publish(Change(dep_id(d), "closed", 0.0, time.time(), self.me))

    def _publish(self, c: Change) -> None:
        t = asyncio.get_running_loop().create_task(self._send(c))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _send(self, c: Change) -> None:
        data = _enc.encode(c)
        try:
            async with self.r.pipeline(transaction=False) as p:
                if c.kind == "closed":
                    p.hdel(SNAPSHOT, c.dep.encode())
                else:
                    p.hset(SNAPSHOT, c.dep.encode(), data)
                p.publish(CHANNEL, data)
                await p.execute()
        except (RedisError, OSError):  # Redis down: this process still protects itself
            log.warning("could not share a deployment's state change (Redis unavailable)",
                        extra={"change": c.kind})

    # -- listening (one background task per process) --

    def start(self) -> None:
        self._listener = asyncio.get_running_loop().create_task(self._listen_forever())

    async def close(self) -> None:
        for t in [*self._tasks, *([self._listener] if self._listener else [])]:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await t

    async def _listen_forever(self) -> None:
        backoff = 0.5
        while True:
            try:
                async with self.r.pubsub(ignore_subscribe_messages=True) as ps:
                    await ps.subscribe(CHANNEL)
                    await self._catch_up()
                    backoff = 0.5
                    while True:
                        msg = await ps.get_message(timeout=10.0)
                        if msg is not None and msg.get("type") == "message":
                            self._apply(msg["data"], from_snapshot=False)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                await asyncio.sleep(backoff)  # Redis away: retry; changes missed meanwhile come from the hash
                backoff = min(backoff * 2, 5.0)

    async def _catch_up(self) -> None:
        for raw in (await self.r.hgetall(SNAPSHOT)).values():
            self._apply(cast(bytes, raw), from_snapshot=True)  # (decode_responses=False: bytes)

    def _deployments(self) -> dict[str, Deployment]:
        pool = self.pool()
        if self._index[0] != id(pool):
            self._index = (id(pool), {dep_id(d): d for d in pool.all_deployments()})
        return self._index[1]

    def _apply(self, raw: bytes, from_snapshot: bool) -> None:
        try:
            c = _dec.decode(raw)
        except msgspec.DecodeError:
            return
        if c.origin == self.me:
            return
        d = self._deployments().get(c.dep)
        if d is None:
            return
        left = c.seconds - max(time.time() - c.at, 0.0) if from_snapshot else c.seconds
        if c.kind != "closed" and left <= 0:
            return
        h = d.health
        now = asyncio.get_running_loop().time()
        if c.kind == "open":
            if h.state == CLOSED or (h.state == OPEN and h.opened_until < now + left):
                h.state, h.opened_until = OPEN, now + left
        elif c.kind == "pause":
            h.not_before = max(h.not_before, now + left)
            h.busy = GatewayError(f"The upstream for the model '{d.route}' asked for a pause (rate limit); try "
                                  "again after the Retry-After delay.", status=c.status or 429, type="requests",
                                  code=c.code or "rate_limit_exceeded", retryable=True, capacity=True)
        elif h.state in (OPEN, HALF_OPEN):
            h.state, h.failures = CLOSED, 0
        else:
            return
        self.applied += 1
        log.info("deployment state from another instance", extra={
            "route": d.route, "deployment": d.label, "change": c.kind, "seconds": round(left, 3)})
