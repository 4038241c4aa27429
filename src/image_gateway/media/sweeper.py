"""The TTL sweep of hosted images, and who runs it.

A local directory belongs to one machine, so every process sweeps its own. A shared store (a bucket)
with REDIS_URL set is swept by one process at a time: the sweeper holds a Redis lock (SET NX PX,
renewed by its holder each round, so the same process keeps sweeping; if it dies, the lock lapses
after a few rounds and another takes over). Without Redis each process sweeps the bucket, which is
harmless (deletes are idempotent) and fine for one machine. A sweep that fails (bucket or Redis
down) is logged and tried again next round; serving never depends on it, as expired images are
refused on read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from redis.exceptions import RedisError

from ..errors import GatewayError
from .store import ImageStore

log = logging.getLogger("image_gateway.images")

LOCK_KEY = "image_gateway:images:sweep"
# Take the lock when free; keep it when it is already ours (renew); else leave it to its holder.
_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0
"""


def interval_for(ttl_s: float, every_s: float = 600.0) -> float:
    return min(every_s, max(1.0, ttl_s / 4))


class Sweeper:
    def __init__(self, store: ImageStore, redis: Any = None, every_s: float = 600.0, instance: str = "") -> None:
        """`redis`: a redis.asyncio client, used only when the store is shared."""
        self.store = store
        self.redis = redis if store.shared else None
        self.every_s = interval_for(store.ttl_s, every_s)
        self.token = f"{instance or 'gateway'}:{secrets.token_hex(8)}"

    async def _may_sweep(self) -> bool:
        if self.redis is None:
            return True
        try:
            # Held for three rounds: a holder that dies is replaced within about three intervals.
            got = await self.redis.eval(_ACQUIRE, 1, LOCK_KEY, self.token, int(self.every_s * 3000))
        except (RedisError, OSError, TimeoutError) as e:
            log.warning("image sweep skipped: Redis unavailable", extra={"error": type(e).__name__})
            return False
        return bool(got)

    async def once(self) -> int | None:
        """One round: how many images went, or None when another process holds the sweep (or it failed)."""
        if not await self._may_sweep():
            return None
        try:
            gone = await self.store.sweep()
        except GatewayError:
            return None  # (logged by the store)
        if gone:
            log.info("expired hosted images deleted", extra={"deleted": gone})
        return gone

    async def forever(self) -> None:
        while True:
            await self.once()
            await asyncio.sleep(self.every_s)

    async def release(self) -> None:
        """At shutdown: hand the lock on at once if it is ours."""
        if self.redis is None:
            return
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self.redis.eval("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) "
                                  "end return 0", 1, LOCK_KEY, self.token)
