"""Per-key rate limits counted in Redis (REDIS_URL): one limit for all gateway processes together.

The same rules as routing/limits.py's in-memory Limiter (a token bucket of `rpm` tokens refilled at
rpm/60 per second; a count of requests in flight), decided by one Lua script per request, so the
check and the update are one atomic step for every process. It reads Redis's own clock (TIME), so
processes on machines whose clocks disagree still share one bucket. It goes over state/resp.py's
pipelined connection: a request waits on it, and redis-py would cost as much CPU as the request.

A concurrency slot is a member of a sorted set scored with its expiry: this process renews its
slots every lease/3 while their requests run, so a process that dies gives its slots back within
one lease (TASK_LEASE_S: how long any process's claim outlives it). A caller is stored only as
its keyed fingerprint (engine/owners.py), never as a key.
A key whose limit is zero for both makes no Redis call at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Callable

from redis.exceptions import RedisError

from ..core.settings import KeyLimit
from ..state.redis import guarded
from ..state.resp import FastConnection, encode, sha1

log = logging.getLogger("image_gateway.routing")

PREFIX = "igw:rl:"

# KEYS: bucket hash, slots zset. ARGV: rpm, concurrent, slot id, lease ms.
# Returns {0, 0} (admitted; a slot taken when concurrent > 0), {1, wait ms} (concurrent), {2, wait ms} (rpm).
_ACQUIRE = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm = tonumber(ARGV[1])
local conc = tonumber(ARGV[2])
local lease = tonumber(ARGV[4])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then return {1, 1000} end
end
if rpm > 0 then
  local rate = rpm / 60000.0
  local b = redis.call('HMGET', KEYS[1], 't', 's')
  local tokens = tonumber(b[1])
  local stamp = tonumber(b[2])
  if tokens == nil or stamp == nil then tokens = rpm; stamp = now end
  tokens = math.min(rpm, tokens + math.max(now - stamp, 0) * rate)
  if tokens < 1 then
    redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', now)
    redis.call('PEXPIRE', KEYS[1], 61000)
    return {2, math.ceil((1 - tokens) / rate)}
  end
  redis.call('HSET', KEYS[1], 't', tostring(tokens - 1), 's', now)
  redis.call('PEXPIRE', KEYS[1], 61000)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + lease, ARGV[3])
  redis.call('PEXPIRE', KEYS[2], lease * 2)
end
return {0, 0}
"""

# KEYS: slot zsets; ARGV: lease ms, then one slot id per key. Pushes each held slot's expiry out.
_RENEW = b"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, k in ipairs(KEYS) do
  redis.call('ZADD', k, 'XX', now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', k, lease * 2)
end
return #KEYS
"""


class SharedLimiter:
    """`acquire` / `release` like routing/limits.py's Limiter, but async and global (see above)."""

    def __init__(self, url: str, lease_s: float, fingerprint: Callable[[str], str]) -> None:
        self.r = FastConnection(url)
        self.lease_s = lease_s
        self._lease_ms = int(lease_s * 1000)
        self.fingerprint = fingerprint  # a caller's keyed fingerprint (engine/owners.py): what Redis sees
        self._callers: dict[str, tuple[KeyLimit, tuple[bytes, bytes], bytes]] = {}
        self._ids = itertools.count()
        self._me = os.urandom(6).hex()  # this process, in slot ids
        self.held: dict[str, tuple[bytes, bytes]] = {}  # slot id → (zset key, member)
        self._renewer: asyncio.Task[None] | None = None

    async def acquire(self, who: str, lim: KeyLimit) -> tuple[str | None, float, str | None]:
        """(None, 0, slot) when admitted (slot: to release, None without a concurrency limit), else
        (reason, seconds to wait, None). Raises StateUnavailable when Redis cannot be reached."""
        known = self._callers.get(who)
        if known is None or known[0] is not lim:
            known = self._learn(who, lim)
        _, keys, prepared = known
        slot = f"{self._me}:{next(self._ids)}" if lim.concurrent else ""
        async with guarded("rate-limited requests"):
            verdict, wait_ms = await self.r.evalsha(_ACQUIRE, keys, (lim.rpm, lim.concurrent, slot, self._lease_ms),
                                                    None if slot else prepared)
        if verdict == 1:
            return "concurrent", wait_ms / 1000.0, None
        if verdict == 2:
            return "rpm", wait_ms / 1000.0, None
        if not slot:
            return None, 0.0, None
        self.held[slot] = (keys[1], slot.encode())
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())
        return None, 0.0, slot

    def _learn(self, who: str, lim: KeyLimit) -> tuple[KeyLimit, tuple[bytes, bytes], bytes]:
        """A caller's Redis keys (named by its fingerprint) and, without a slot, its whole EVALSHA, made
        once (memory only, like routing/limits.py's buckets, and bounded like them)."""
        if len(self._callers) >= 10_000:
            self._callers.clear()
        fp = self.fingerprint(who)
        keys = (f"{PREFIX}{{{fp}}}:b".encode(), f"{PREFIX}{{{fp}}}:c".encode())
        prepared = encode((b"EVALSHA", sha1(_ACQUIRE), 2, *keys, lim.rpm, lim.concurrent, "", self._lease_ms))
        known = self._callers[who] = (lim, keys, prepared)
        return known

    async def release(self, slot: str | None) -> None:
        if slot is None:
            return
        held = self.held.pop(slot, None)
        if held is None:
            return
        try:
            await self.r.call(b"ZREM", *held)
        except (RedisError, OSError):  # Redis gone: the slot's lease runs out by itself
            log.warning("could not give back a concurrency slot in Redis; it expires within its lease",
                        extra={"lease_s": self.lease_s})

    async def _renew_forever(self) -> None:
        while self.held:
            await asyncio.sleep(self.lease_s / 3)
            held = list(self.held.values())
            if not held:
                break
            with contextlib.suppress(RedisError, OSError):  # a miss: the next round makes up for it
                await self.r.evalsha(_RENEW, tuple(k for k, _ in held),
                                     (int(self.lease_s * 1000), *(m for _, m in held)))

    async def close(self) -> None:
        self.r.close()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
