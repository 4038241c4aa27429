"""Input images of accepted tasks not sent upstream yet, in Redis (REDIS_URL), so whichever process
takes the task over can submit it (the same interface as engine/inputs.py).

One hash per task, `P in:<task id>`, field n = the n-th image's bytes (binary; never a key), written
with the task before its 202 and expiring at the task's deadline plus a margin, so the inputs of a
task that ended while no process was there go by themselves; deleted once the upstream accepted the
task or it ended. Redis trouble raises StateUnavailable (503), as for the task records.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from ..state.redis import guarded
from .redis_store import RedisTaskStore

log = logging.getLogger("image_gateway.engine")
MARGIN_S = 600.0  # kept this long past the deadline: a takeover near it still finds them


class RedisInputStore:
    def __init__(self, store: RedisTaskStore, default_ttl_s: float) -> None:
        self.store = store  # (its client, opened with the task store: one connection pool per process)
        self.default_ttl_s = default_ttl_s  # a task without a deadline

    def _key(self, task_id: str) -> str:
        return f"{self.store.p}in:{task_id}"

    async def put(self, task_id: str, blobs: Sequence[bytes], deadline_at: float | None = None) -> None:
        ttl_s = (deadline_at - time.time() if deadline_at is not None else self.default_ttl_s) + MARGIN_S
        key = self._key(task_id)
        async with guarded("an async task"):
            pipe = self.store.client.pipeline(transaction=True)
            pipe.delete(key)
            pipe.hset(key, mapping={str(i): blob for i, blob in enumerate(blobs)})
            pipe.pexpire(key, max(1000, int(ttl_s * 1000)))
            await pipe.execute()

    async def get(self, task_id: str, count: int) -> list[bytes]:
        async with guarded("the task's input images"):
            blobs = await self.store.client.hmget(self._key(task_id), [str(i) for i in range(count)])
        if any(b is None for b in blobs):
            raise LookupError(f"the input images of task {task_id} are no longer in Redis")
        return list(blobs)

    async def drop(self, task_id: str) -> None:
        try:
            async with guarded():
                await self.store.client.delete(self._key(task_id))
        except Exception as e:  # (Redis away: they expire by themselves)
            log.info("deleting a task's input images failed", extra={"task_id": task_id, "error": type(e).__name__})

    async def sweep(self, keep: set[str]) -> None:
        """Nothing to do: leftovers expire (no process reads every task at start when tasks are shared)."""
