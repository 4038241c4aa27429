"""After a restart: every unfinished task in the store is picked up again.

* Its upstream had accepted it (a handle is stored) and it used the gateway's configured key:
  polling resumes at once, against its stored deadline.
* It used the caller's own key (never stored): it waits, `requires_key`, until a GET brings the
  key again (Engine.resume), or its deadline passes.
* Its upstream had not accepted it yet (no handle): nothing was made; it fails as
  `gateway_restarted` so the caller can submit it again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import TYPE_CHECKING

from ..errors import AuthError, GatewayError, UpstreamTimeout
from .jobs import Job

if TYPE_CHECKING:
    from .engine import Engine

log = logging.getLogger("image_gateway.engine")


async def recover(engine: Engine) -> None:
    lost: list[Job] = []
    resumed = waiting = 0
    for rec in await engine.store.unfinished():
        job = Job.from_record(rec)
        if rec.handle is None:
            job.fail(GatewayError("The gateway restarted before the upstream accepted this job; nothing was "
                                  "generated. Submit it again.", status=503, type="server_error",
                                  code="gateway_restarted", retryable=True))
            lost.append(job)
            continue
        engine.jobs[job.id] = job
        how = reattach(engine, job, None) if rec.key_source == "configured" else "key"
        if how == "polling":
            resumed += 1
        elif how == "key":
            job.requires_key = True
            waiting += 1
    await engine.ledger.save(lost)
    if resumed or waiting or lost:
        log.info("tasks recovered", extra={"resumed": resumed, "waiting_for_key": waiting, "lost": len(lost)})


def reattach(engine: Engine, job: Job, key: str | None) -> str:
    """Poll a stored task again: "polling", "key" (its key is needed first) or "failed"."""
    if engine.resolver is None or job.handle is None:
        return "key"
    try:
        provider, ctx = engine.resolver(job.record(), key)
    except AuthError:
        return "key"
    except GatewayError as e:  # e.g. its route is gone from the config
        engine.spawn(engine.fail(job, e))
        return "failed"
    if job.deadline_at is not None:
        loop = asyncio.get_running_loop()
        ctx = dataclasses.replace(ctx, deadline=loop.time() + (job.deadline_at - time.time()))
    job.attach(provider, ctx, job.handle)
    job.resumed = True
    engine.watch(job)
    return "polling"


def check_dormant(engine: Engine, job: Job) -> None:
    """A task waiting for its key past its deadline ends as a timeout."""
    if job.requires_key and job.deadline_at is not None and time.time() > job.deadline_at:
        engine.spawn(engine.fail(job, UpstreamTimeout("The task passed its deadline while waiting for its key.")))
