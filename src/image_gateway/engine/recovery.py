"""After a restart: every unfinished task in the store is picked up again; none fails for the restart.

* Its upstream had accepted it (a handle is stored) and it used the gateway's configured key:
  polling resumes at once, against its stored deadline.
* It used the caller's own key (never stored): it waits, `requires_key`, until its owner's GET
  brings that same key again (Engine.resume), or its deadline passes.
* Accepted with a 202 but never sent upstream (`submit` "waiting", e.g. queued behind the
  per-account limit): it is submitted now, once, in the order the tasks came in; one that needs
  the caller's key waits for it as above and is submitted when it comes.
* Its submission was under way (`submit` "submitting": the upstream may have accepted and billed
  it, and no handle came back): it is *not* sent again (the double-billing rule: an unknown outcome
  is never blindly resent) and fails as `submit_outcome_unknown`, saying so.
* Anything else without a handle (a record from before tasks kept their request) fails as
  `gateway_restarted`, as it did.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import AuthError, GatewayError, UpstreamTimeout
from .host import TaskHost
from .inputs import TaskInputs
from .jobs import Job
from .ledger import Ledger
from .store import TaskRecord, TaskStore

log = logging.getLogger("image_gateway.engine")


def _outcome_unknown() -> GatewayError:
    return GatewayError(
        "The gateway restarted while it was submitting this job upstream, before the upstream's answer "
        "arrived. The upstream may have accepted (and billed) it, so it was not sent again; submit it again "
        "if no images reached you.", status=503, type="server_error", code="submit_outcome_unknown")


def _restarted() -> GatewayError:
    return GatewayError("The gateway restarted before the upstream accepted this job; nothing was "
                        "generated. Submit it again.", status=503, type="server_error",
                        code="gateway_restarted", retryable=True)


Fail = Callable[[Job, GatewayError], Coroutine[Any, Any, None]]


class Recovery:
    """The engine's collaborator for tasks that outlive a process: given the engine's store, live
    jobs, ledger and input store, how to fail a job and how to poll one (it never sees the Engine)."""

    def __init__(self, store: TaskStore, jobs: dict[str, Job], ledger: Ledger, inputs: Callable[[], TaskInputs],
                 host: TaskHost | None, fail: Fail, watch: Callable[[Job], None]) -> None:
        self.store, self.jobs, self.ledger, self.inputs, self.host = store, jobs, ledger, inputs, host
        self.fail, self.watch = fail, watch

    async def recover(self) -> None:
        await self.adopt(await self.store.unfinished())
        await self.inputs().sweep({j.id for j in self.jobs.values() if j.request is not None})

    async def adopt(self, records: list[TaskRecord], message: str = "tasks recovered") -> None:
        """Pick up unfinished records (after a restart, or taken over from a process that died)."""
        lost: list[Job] = []
        queued: list[Job] = []
        resumed = waiting = 0
        now = time.time()
        host = self.host
        for i, rec in enumerate(sorted(records, key=lambda r: r.created)):
            if i % 200 == 199:
                await asyncio.sleep(0)  # thousands at once: let polls and requests run in between
            job = Job.from_record(rec)
            if rec.handle is None:
                if rec.submit != "waiting" or rec.request is None or host is None:
                    job.fail(_outcome_unknown() if rec.submit == "submitting" else _restarted())
                    lost.append(job)
                elif job.deadline_at is not None and now > job.deadline_at:
                    job.fail(UpstreamTimeout("The task passed its deadline before the gateway could submit it."))
                    lost.append(job)
                else:
                    self.jobs[job.id] = job
                    if rec.key_source == "request":
                        job.requires_key = True
                        waiting += 1
                    else:
                        queued.append(job)
                continue
            self.jobs[job.id] = job
            how = self.reattach(job, None) if rec.key_source == "configured" else "key"
            if how == "polling":
                resumed += 1
            elif how == "key":
                job.requires_key = True
                waiting += 1
        for job in lost:
            if job.request is not None and job.request.get("blobs"):
                await self.inputs().drop(job.id)  # (never to be submitted)
            await self.ledger.finished(job)  # stored, and its webhook told
        for job in queued:
            assert host is not None
            host.submit(job, None)
        if resumed or waiting or lost or queued:
            log.info(message, extra={"resumed": resumed, "submitted": len(queued), "waiting_for_key": waiting,
                                     "lost": len(lost)})

    def resume(self, job: Job, key: str | None, keys: object) -> bool:
        """A task waiting for its caller's key gets it (the API layer checked it is the task's owner and
        the key the task started with). Never sent upstream: it is submitted now, with `keys` (the
        caller's key source); else its polling resumes."""
        if not job.requires_key or job.terminal or not key:
            return False
        if job.handle is None:
            if job.submit != "waiting" or self.host is None:
                return False
            job.requires_key = False
            self.host.submit(job, keys)
            return True
        return self.reattach(job, key) == "polling"

    def reattach(self, job: Job, key: str | None) -> str:
        """Poll a stored task again: "polling", "key" (its key is needed first) or "failed"."""
        if self.host is None or job.handle is None:
            return "key"
        try:
            provider, ctx = self.host.resolve(job.record(), key)
        except AuthError:
            return "key"
        except GatewayError as e:  # e.g. its route is gone from the config
            self.ledger.spawn(self.fail(job, e))
            return "failed"
        if job.deadline_at is not None:
            loop = asyncio.get_running_loop()
            ctx = dataclasses.replace(ctx, deadline=loop.time() + (job.deadline_at - time.time()))
        job.attach(provider, ctx, job.handle)
        job.resumed = True
        self.watch(job)
        return "polling"

    def check_dormant(self, job: Job) -> None:
        """A task waiting for its key past its deadline ends as a timeout."""
        if job.requires_key and job.deadline_at is not None and time.time() > job.deadline_at:
            err = UpstreamTimeout("The task passed its deadline while waiting for its key.")
            self.ledger.spawn(self.fail(job, err))
