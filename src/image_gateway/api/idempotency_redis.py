"""Idempotency-Key answers in Redis (REDIS_URL): one job per key and body across every process.

The same contract as api/idempotency.py's IdempotencyStore.run. The first request for a key claims
it with one atomic script (a "running" record holding the body's fingerprint and a claim token,
with a short lease this process renews while the request runs); a request for that key on any
other process then waits, polling the record with a growing interval, and answers what the first
one stored. A request that dies with its process leaves a claim that runs out within one lease
(TASK_LEASE_S), after which a waiting or retried request runs it anew. Within one process,
duplicates attach to the running future without touching Redis again.

Records are named by the same hash as in SQLite (owner fingerprint + Idempotency-Key, api/
idempotency.py key_id) and hold the answer as it went out; nothing of a key is stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import cast

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ..errors import GatewayError
from ..state.redis import guarded
from .idempotency import Stored, _conflict, join_running

log = logging.getLogger("image_gateway.api")

PREFIX = "igw:idem:"
WAIT_FIRST_S, WAIT_MAX_S = 0.02, 0.5  # a waiter's polling interval: doubles from the first to the max


class Record(msgspec.Struct, frozen=True):
    fp: str  # the request body's fingerprint
    token: str = ""  # the claim of a running request ("" once answered)
    status: int = 0  # the answer (status 0: still running)
    headers: dict[str, str] = {}
    body: bytes = b""


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(Record)

# KEYS: record. ARGV: running record, lease ms. The existing record, or nil when this call claimed it.
_CLAIM = """
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
# KEYS: record. ARGV: our running record, then a new value and its ttl ms ("" deletes). Only while ours.
_SETTLE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


class RedisIdempotencyStore:
    def __init__(self, client: aioredis.Redis, lease_s: float, wait_limit_s: Callable[[], float]) -> None:
        self.r = client
        self.lease_s = lease_s
        self.wait_limit_s = wait_limit_s  # how long a waiter waits for another process's request at most
        self.running: dict[str, tuple[str, asyncio.Future[Stored]]] = {}
        self._claim = client.register_script(_CLAIM)
        self._settle = client.register_script(_SETTLE)
        self._renew = client.register_script(_RENEW)

    async def run(self, kid: str, fingerprint: str, ttl_s: float,
                  produce: Callable[[], Awaitable[Stored]], to_stored: Callable[[GatewayError], Stored],
                  ) -> tuple[Stored, str]:
        """As IdempotencyStore.run; raises StateUnavailable when Redis cannot be reached."""
        key = PREFIX + kid
        while True:
            how, joined = await join_running(self.running, kid, fingerprint)
            if how == "retry":
                continue
            if joined is not None:
                return joined, "attached"
            mine = _enc.encode(Record(fingerprint, token=os.urandom(8).hex()))
            async with guarded("requests with an Idempotency-Key"):
                existing = await self._claim([key], [mine, int(self.lease_s * 1000)])
            if existing is None:
                break
            rec = _dec.decode(existing)
            if rec.fp != fingerprint:
                raise _conflict()
            if rec.status:
                return _stored(rec), "replayed"
            done = await self._wait(key, fingerprint)
            if done is not None:
                return done, "attached"
            # the claim went away unanswered (a retryable failure, or its process died): claim it anew
        return await self._produce(kid, key, mine, fingerprint, ttl_s, produce, to_stored)

    async def _produce(self, kid: str, key: str, mine: bytes, fp: str, ttl_s: float,
                       produce: Callable[[], Awaitable[Stored]], to_stored: Callable[[GatewayError], Stored],
                       ) -> tuple[Stored, str]:
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.running[kid] = (fp, fut)
        renewer = asyncio.create_task(self._renew_forever(key, mine))
        try:
            result = await produce()
        except GatewayError as e:
            if not e.retryable:
                failed = to_stored(e)
                await self._save(key, mine, failed, ttl_s)
                fut.set_result(failed)
            else:
                await self._save(key, mine, None, ttl_s)
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        except BaseException:
            fut.cancel()
            await asyncio.shield(self._save(key, mine, None, ttl_s))  # let a waiter or a retry run it
            raise
        else:
            await self._save(key, mine, result, ttl_s)
            fut.set_result(result)
            return result, "new"
        finally:
            renewer.cancel()
            self.running.pop(kid, None)

    async def _save(self, key: str, mine: bytes, s: Stored | None, ttl_s: float) -> None:
        """Store the answer (None: drop the claim) if the claim is still ours. A Redis failure here is
        logged, not raised: the caller gets its answer; only a later replay of it is lost."""
        value = b"" if s is None else _enc.encode(Record(s.fingerprint, "", s.status, s.headers, s.body))
        try:
            await self._settle([key], [mine, value, max(1, int(ttl_s * 1000))])
        except (RedisError, OSError):
            log.warning("could not store an Idempotency-Key answer in Redis; a retry of it may run again")

    async def _renew_forever(self, key: str, mine: bytes) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                if not await self._renew([key], [mine, int(self.lease_s * 1000)]):
                    return  # no longer ours (it ran out while Redis was away): nothing to renew
            except (RedisError, OSError):
                continue  # one missed renewal of three per lease

    async def _wait(self, key: str, fp: str) -> Stored | None:
        """The answer of a request running on another process, or None when its claim went away."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.wait_limit_s()
        pause = WAIT_FIRST_S
        while loop.time() < end:
            await asyncio.sleep(pause)
            pause = min(pause * 2, WAIT_MAX_S)
            async with guarded("requests with an Idempotency-Key"):
                raw = await self.r.get(key)
            if raw is None:
                return None
            rec = _dec.decode(cast(bytes, raw))  # (decode_responses=False: bytes)
            if rec.fp != fp:  # (a new claim with another body after ours went away)
                raise _conflict()
            if rec.status:
                return _stored(rec)
        raise GatewayError("The first request with this Idempotency-Key is still running on another gateway "
                           "instance; retry with the same key later.", status=409, type="invalid_request_error",
                           code="idempotency_key_in_use", param="Idempotency-Key", retryable=True)

    def close(self) -> None:
        """(The Redis client is shared: the Runtime closes it.)"""


def _stored(rec: Record) -> Stored:
    return Stored(rec.fp, rec.status, dict(rec.headers), rec.body)
