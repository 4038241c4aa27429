"""The engine's side of shared tasks (REDIS_URL): what it does when the Fleet (engine/fleet.py) claims,
loses or is asked to cancel a task. Given the Engine; used only when a Fleet is configured."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import GatewayError
from .fleet import Claimed, Fleet
from .jobs import Job
from .store import TERMINAL, TaskRecord

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("image_gateway.engine")


def cancelled() -> GatewayError:
    return GatewayError("The task was cancelled.", status=409, type="invalid_request_error", code="task_cancelled")


class SharedTasks:
    def __init__(self, engine: Engine, fleet: Fleet) -> None:
        self.engine = engine
        self.fleet = fleet

    def start(self) -> None:
        if not self.engine.owners.configured:
            log.warning("REDIS_URL is set but TASK_OWNER_SECRET is not: give every process the same "
                        "TASK_OWNER_SECRET (or one DATA_DIR), else a task is found only by the process that took it")
        store = self.fleet.store
        store.on_lost = self.lost
        ledger = self.engine.ledger
        store.on_resaved = lambda rec: ledger.spawn(ledger.deliver(rec))
        ledger.may_deliver = store.holds
        self.fleet.start(self.take_over, self.cancel_here, self.resave)

    def lost(self, ids: list[str]) -> None:
        """Another process holds these tasks now: stop polling them here, write nothing more."""
        for task_id in ids:
            job = self.engine.jobs.pop(task_id, None)
            if job is not None:
                self.engine._unpoll(job)
                self.engine.ledger.dirty.discard(job)

    async def take_over(self, claimed: Claimed) -> None:
        """Claimed tasks (their process died or let them go) resume here as after a restart."""
        ledger = self.engine.ledger
        running: list[TaskRecord] = []
        for rec, cancel in claimed:
            if rec.id in self.engine.jobs:
                continue  # (ours already: its lease was taken back)
            if rec.status in TERMINAL:
                if rec.webhook_status == "pending":
                    ledger.spawn(ledger.deliver(rec))
                else:
                    await self.fleet.store.release([rec.id])
            elif cancel:
                await self._cancel_claimed(rec)
            else:
                running.append(rec)
        if running:
            await self.engine.recovery.adopt(running, "tasks taken over")

    async def _cancel_claimed(self, rec: TaskRecord) -> None:
        """A claimed task somebody asked to cancel: cancelled, upstream too where its key is the gateway's,
        and never submitted if it had not been."""
        job = Job.from_record(rec)
        self.engine.jobs[job.id] = job
        if rec.handle is not None and rec.key_source == "configured":
            self.engine.recovery.reattach(job, None)
        await self.engine._stop(job, cancelled(), "cancelled")

    async def cancel_here(self, task_id: str) -> None:
        """A DELETE on another process asked for a task: cancelled here if this process polls it."""
        job = self.engine.jobs.get(task_id)
        if job is not None and not job.terminal:
            try:
                await self.engine.cancel(task_id)
            except Exception:
                log.exception("cancelling a task for another process failed", extra={"task_id": task_id})

    async def cancel(self, task_id: str) -> TaskRecord | None:
        """DELETE of a task this process does not poll."""
        store = self.fleet.store
        rec = await store.get(task_id)
        if rec is None or rec.status in TERMINAL:
            return rec
        claimed = await self.fleet.cancel(task_id)
        if claimed:
            await self.take_over(claimed)
        return await store.get(task_id)

    async def resave(self, ids: list[str]) -> None:
        """Redis lost these records (restarted empty): write them again from memory."""
        jobs = [j for i in ids if (j := self.engine.jobs.get(i)) is not None]
        if jobs:
            await self.engine.ledger.save(jobs)
