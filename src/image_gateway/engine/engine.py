"""The engine runs one job against one provider and yields its events; it owns the async tasks.

Sync providers finish inside `run()` in the caller's own coroutine: nothing is stored, no task is
started (the hot path). When a provider hands back a Pending handle the job becomes a task: it is
registered, written to the TaskStore (never its key) and handed to the provider's Poller, so it
finishes even if the request that started it goes away. A caller still waiting gets the same
stream of events either way, ending with the ProviderResult (rendered once, by the engine).

A detached job (`Prefer: respond-async`) yields its Pending back to the caller instead of
waiting: the iteration ends there and the poller completes the job. It is stored from its 202 on,
with its request, and marked "submitting" (a durable write) right before its provider sends it
upstream, so a restart can tell a job never sent (submitted then) from one that may have been
(not sent twice: engine/recovery.py).

The caller's job comes in as an argument of `events`/`result` (None: a job of its own is made if
one is needed); what the engine needs from the API layer (rendering a result, finding a stored
task's provider again, submitting a stored task) comes through its constructor (engine/host.py).

This module builds the Engine and runs its life (start, housekeeping, close); running a job is
engine/running.py, a task's life from stored to ended is engine/taskflow.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .deadlines import Deadlines
from .fleet import Fleet
from .host import TaskHost
from .inputs import InputStore, TaskInputs
from .jobs import Job
from .ledger import Ledger
from .owners import SECRET_FILE, Owners
from .poller import Poller
from .recovery import Recovery
from .redis_inputs import RedisInputStore
from .running import JobRunner
from .shared import SharedTasks
from .store import MemoryTaskStore, TaskRecord, TaskStore
from .webhooks import WebhookSender

SUBMIT_GRACE_S = 5.0  # on shutdown, how long a submission under way may finish (else: outcome unknown)


class Engine(JobRunner):
    def __init__(self, poll_interval_s: float = 2.0, *, store: TaskStore | None = None,
                 webhooks: WebhookSender | None = None, secrets: Callable[[], list[str]] | None = None,
                 task_ttl_s: float = 7 * 24 * 3600.0, host: TaskHost | None = None, fleet: Fleet | None = None) -> None:
        self.poll_interval_s = poll_interval_s
        self.store = fleet.store if fleet is not None else store if store is not None else MemoryTaskStore()
        self.host = host  # without one (unit tests): results unrendered, no webhooks, no resubmission
        self.ledger = Ledger(self.store, webhooks, task_ttl_s, host.webhook_body if host is not None else None)
        self.secrets = secrets or (lambda: [])
        self.owners = Owners()  # (configure() gives both a home under DATA_DIR)
        self.inputs = InputStore()
        self.jobs: dict[str, Job] = {}  # live tasks
        self.recovery = Recovery(self.store, self.jobs, self.ledger, lambda: self.inputs, host, self.fail, self._poll)
        self.deadlines = Deadlines()
        self._pollers: dict[int, Poller] = {}
        self._spawn = self.ledger.spawn
        self.task_ttl_s = task_ttl_s
        self.fleet = fleet  # shared tasks (REDIS_URL): leases, takeover, events across processes
        self.shared = SharedTasks(self, fleet) if fleet is not None else None

    def configure(self, data_dir: Path, owner_secret: str | None) -> None:
        """Where task owners' secret and queued tasks' input images live (before `start`): input images
        in Redis when tasks are shared (any process may submit the task), else under DATA_DIR."""
        self.owners = Owners(data_dir / SECRET_FILE, owner_secret)
        inputs: TaskInputs = RedisInputStore(self.fleet.store, self.task_ttl_s) if self.fleet is not None \
            else InputStore(data_dir / "task_inputs")
        self.inputs = inputs

    @property
    def queue_depth(self) -> int:
        """Async tasks not finished yet: waiting to be sent (e.g. for an account slot), being sent,
        polled, or waiting for their caller's key (the `gateway_queue_depth` gauge)."""
        return len(self.jobs)

    @property
    def leases(self) -> int:
        """Tasks this process holds the poll lease of (shared state; 0 without)."""
        return self.fleet.leases if self.fleet is not None else 0

    @property
    def polls(self) -> int:
        return sum(p.polls for p in self._pollers.values())

    async def find(self, task_id: str) -> Job | TaskRecord | None:
        job = self.jobs.get(task_id)
        if job is not None:
            self.recovery.check_dormant(job)
            return job
        return await self.store.get(task_id)

    def resume(self, job: Job, key: str | None, keys: Any = None) -> bool:
        """A task that lost its caller's key in a restart gets it again (engine/recovery.py)."""
        return self.recovery.resume(job, key, keys)

    # -- lifecycle ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store; resume every unfinished task; redeliver pending webhooks."""
        self.owners.load()  # the owner secret exists from the first start on
        await self.store.open()
        if self.shared is not None:  # shared: tasks come by lease (engine/fleet.py), none read at start
            self.shared.start()
        else:
            await self.recovery.recover()
            await self.ledger.redeliver()
        self._spawn(self._housekeeping())

    async def _housekeeping(self, every_s: float = 60.0) -> None:
        while True:
            for job in list(self.jobs.values()):
                self.recovery.check_dormant(job)
            await self.ledger.sweep()
            await asyncio.sleep(every_s)

    async def close(self) -> None:
        for p in self._pollers.values():
            await p.stop()
        # A submission under way gets a moment to get its handle (cut off, its outcome is unknown and a
        # restart will not resend it); jobs still waiting for a slot stop at once (a restart sends them).
        sending = [j.runner for j in self.jobs.values()
                   if j.submit == "submitting" and j.runner is not None and not j.runner.done()]
        if sending:
            await asyncio.wait(sending, timeout=SUBMIT_GRACE_S)
        runners = [j.runner for j in self.jobs.values() if j.runner is not None and not j.runner.done()]
        for t in runners:
            t.cancel()
        for t in runners:
            with contextlib.suppress(BaseException):
                await t
        if self.fleet is not None:
            await self.fleet.stop()  # (the store releases its leases as it closes: others take over now)
        await self.ledger.close()
