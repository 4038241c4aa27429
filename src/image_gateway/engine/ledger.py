"""The engine's bookkeeping for tasks: store writes, webhook deliveries, expiry of old records.

Writes are group-committed: records queue up (in the order their state changed) and one writer
task saves everything queued meanwhile in a single transaction, in that order, so a job's latest
record always lands last. Status changes seen by polls are batched too: jobs are marked dirty and
flushed once per poll batch (a bare percent change is not written).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import GatewayError
from .jobs import Job
from .store import TaskRecord, TaskStore
from .webhooks import WebhookSender

log = logging.getLogger("image_gateway.engine")


class Ledger:
    def __init__(self, store: TaskStore, webhooks: WebhookSender | None, ttl_s: float,
                 body: Callable[[TaskRecord], bytes] | None = None) -> None:
        self.store = store
        self.webhooks = webhooks
        self.body = body  # a webhook's body (the public task object), rendered by the API layer
        self.ttl_s = ttl_s
        self.dirty: set[Job] = set()
        # Whether this process may deliver a finished task's webhook (shared state: it holds its lease).
        # (None: always; else only once the finished record is stored and the lease still ours)
        self.may_deliver: Callable[[str], bool] | None = None
        self._queue: list[tuple[list[TaskRecord], asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._bg: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    async def write(self, recs: list[TaskRecord]) -> bool:
        """Queue records for the next group commit and wait until it is done; False if it failed (logged)."""
        if not recs:
            return True
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((recs, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_loop())
        return await asyncio.shield(fut)

    async def _write_loop(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            recs = [r for rs, _ in batch for r in rs]
            ok = True
            try:
                await self.store.save(recs)
            except GatewayError as e:  # (shared state away: the store writes them again later)
                ok = False
                log.warning("task store write failed", extra={"tasks": len(recs), "error": e.code})
            except Exception:
                ok = False
                log.exception("task store write failed", extra={"tasks": len(recs)})
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(ok)

    async def save(self, jobs: list[Job], running_only: bool = False) -> None:
        """Records of the jobs as they are now, written in order with everything else queued."""
        await self.write([j.record() for j in jobs if not (running_only and j.terminal)])

    async def flush(self) -> None:
        if self.dirty:
            jobs = list(self.dirty)
            self.dirty.clear()
            await self.save(jobs, running_only=True)

    async def finished(self, job: Job) -> None:
        """A task ended: its final record, then its webhook."""
        self.dirty.discard(job)
        if job.webhook_url and self.webhooks is not None and self.body is not None:
            job.webhook_status = "pending"
        rec = job.record()
        ok = await self.write([rec])  # queued at once: a caller that goes away does not lose the record
        if job.webhook_status == "pending" and (self.may_deliver is None or (ok and self.may_deliver(rec.id))):
            self.spawn(self.deliver(rec))

    async def deliver(self, rec: TaskRecord) -> None:
        if self.webhooks is None or self.body is None or not rec.webhook_url:
            return
        ok = await self.webhooks.deliver(rec.webhook_url, self.body(rec), rec.id, f"image.task.{rec.status}")
        rec.webhook_status = "delivered" if ok else "failed"
        await self.write([rec])

    async def redeliver(self) -> None:
        """Webhooks still pending from before a restart."""
        for rec in await self.store.undelivered():
            self.spawn(self.deliver(rec))

    async def sweep(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.sweep(time.time() - self.ttl_s)

    async def close(self) -> None:
        tasks = list(self._bg)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        await self.flush()
        if self._writer is not None:
            with contextlib.suppress(BaseException):
                await self._writer
        with contextlib.suppress(Exception):
            await self.store.close()
        if self.webhooks is not None:
            await self.webhooks.close()
