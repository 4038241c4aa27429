"""A task's life in the engine: stored before anything is sent, marked "submitting", handed to its
provider's Poller once the upstream accepted it, and ended once (a result rendered and stored, a
failure scrubbed of keys, a cancel or deadline that also cancels upstream), its listeners and
webhook told.

The state it works on is the Engine's (engine/engine.py builds it); the running-job loop
(engine/running.py) calls in here when a job becomes a task or ends.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from ..core.types import CallContext, Pending, PollOutcome, Progress, ProviderResult
from ..errors import GatewayError, UpstreamError, UpstreamTimeout, scrub
from ..providers.base import PollingProvider, Provider
from ..state.redis import StateUnavailable
from .fleet import Fleet
from .host import TaskHost
from .inputs import TaskInputs
from .jobs import Job
from .ledger import Ledger
from .owners import Owners
from .poller import Poller, PollSettings
from .store import TaskRecord, TaskStore

if TYPE_CHECKING:
    from .shared import SharedTasks

log = logging.getLogger("image_gateway.engine")


class TaskFlow:
    # (set by Engine.__init__)
    poll_interval_s: float
    store: TaskStore
    host: TaskHost | None
    ledger: Ledger
    secrets: Callable[[], list[str]]
    owners: Owners
    inputs: TaskInputs
    jobs: dict[str, Job]
    fleet: Fleet | None
    shared: SharedTasks | None
    _pollers: dict[int, Poller]
    _spawn: Callable[[Coroutine[Any, Any, Any]], None]

    # -- created, submitted, polled -----------------------------------------------------------------

    async def open_task(self, job: Job, inputs: Sequence[bytes] = ()) -> None:
        """A detached job: registered and stored (its input images first) before anything is sent
        upstream. `job.request` and `job.submit = "waiting"` let a restart submit it."""
        job.persistent = True
        if inputs:
            await self.inputs.put(job.id, inputs, job.deadline_at)
        self.jobs[job.id] = job
        if not await self.ledger.write([job.record()]) and self.fleet is not None:
            self.jobs.pop(job.id, None)  # not stored where every process finds it: no 202
            self.fleet.store.forget(job.id)
            if inputs:
                self._spawn(self.inputs.drop(job.id))
            raise StateUnavailable("an async task")

    async def submitting(self, job: Job) -> None:
        """Durably mark a stored task as being sent upstream, before it is (engine/engine.py docstring)."""
        if job.submit == "waiting":
            job.submit = "submitting"
            await self.ledger.save([job])

    async def adopt(self, job: Job, provider: Provider, ctx: CallContext, handle: dict[str, Any]) -> None:
        """The upstream accepted the job: from now on the poller owns it."""
        job.attach(provider, ctx, handle)
        if job.key_source == "request":  # only this key resumes it after a restart
            job.key_fp = self.owners.of(ctx.api_key)
        job.persistent = True
        self.jobs[job.id] = job
        self._poll(job)
        self._forget_request(job)
        await self.ledger.save([job])  # queued before any await: a caller that goes away loses nothing

    def _forget_request(self, job: Job) -> None:
        """The upstream has the job (or it ended): its stored request and input images are not needed."""
        if job.request is not None:
            if job.request.get("blobs"):
                self._spawn(self.inputs.drop(job.id))
            job.request = None

    def _poll(self, job: Job) -> None:
        assert isinstance(job.provider, PollingProvider) and job.ctx is not None
        p = self._pollers.get(id(job.provider))
        if p is None:
            p = self._pollers[id(job.provider)] = Poller(job.provider, self._dispatch, self._expired,
                                                         self._after_batch)
        interval = job.provider.poll_interval_s
        default = self.poll_interval_s if interval is None else interval
        # (a task taken over from another process is polled at once: its last poll is that far back)
        p.add(job, PollSettings.from_options(job.ctx.options, default), now=self.fleet is not None and job.resumed)

    async def _after_batch(self) -> None:
        await self.ledger.flush()
        if self.fleet is not None:
            await self.fleet.flush()

    def _unpoll(self, job: Job) -> None:
        if job.provider is not None and (p := self._pollers.get(id(job.provider))) is not None:
            p.remove(job.id)

    def _dispatch(self, job: Job, out: PollOutcome) -> None:
        if job.terminal:
            return
        if isinstance(out, Progress):
            before = job.status
            # Only a status change is written: a percent is cheap to learn again from the next poll,
            # and writing every job's percent each round is what made 10,000 tasks stall the loop.
            if job.update(out):
                if self.fleet is not None:
                    self.fleet.progress(job.id, job.status, job.progress)
                if job.status != before:
                    self.ledger.dirty.add(job)
        elif isinstance(out, Pending):
            job.handle = out.handle
            self.ledger.dirty.add(job)
        elif isinstance(out, ProviderResult):
            self._spawn(self.complete(job, out))
        elif isinstance(out, GatewayError):
            if out.status in (401, 403) and job.resumed and job.key_source == "request":
                self._unpoll(job)  # the key given on resume is not the one: ask again, keep the task
                job.ctx, job.requires_key = None, True
                return
            if job.waiters and not job.detached:
                # A caller is waiting: its router may retry or fall back, so this attempt's error
                # goes to it and the job stays open; the API layer settles it if nothing follows.
                err = copy.copy(out)
                scrub(err, [job.ctx.api_key if job.ctx else None, *self.secrets()])
                job.reopen(err)
                self.ledger.dirty.add(job)
                return
            self._spawn(self.fail(job, out))

    # -- ended --------------------------------------------------------------------------------------

    def settle(self, job: Job, exc: BaseException) -> None:
        """The request that waited on `job` ended with `exc`: a job between attempts ends with that
        error; a job the poller is still running (its caller went away) runs on to its end."""
        if not job.persistent or job.terminal or job.detached:
            return
        if job.handle is not None and job.ctx is not None:
            return
        err = exc if isinstance(exc, GatewayError) else GatewayError(
            "The request ended before its job did.", status=500, type="server_error", code="request_ended")
        self._spawn(self.fail(job, err))

    def _expired(self, job: Job) -> None:
        err = UpstreamTimeout("The image job did not finish before its deadline (route option deadline_s, "
                              "or JOB_DEADLINE_S); the gateway stopped waiting for it.", retryable=False)
        self._spawn(self._stop(job, err, "failed"))

    async def complete(self, job: Job, result: ProviderResult) -> None:
        """Render the result once, store it, tell every listener, then the webhook."""
        if job.terminal:
            return
        body: dict[str, Any] | None = None
        if self.host is not None:
            try:
                body = await self.host.render(job, result)
            except GatewayError as e:
                await self.fail(job, e)
                return
            except Exception:
                log.exception("rendering a task result failed", extra={"task_id": job.id})
                await self.fail(job, UpstreamError("The gateway could not deliver the generated images."))
                return
        result.rendered = body
        job.succeed(result, body)
        await self._finished(job)

    async def fail(self, job: Job, err: GatewayError, status: str = "failed") -> None:
        if job.terminal:
            return
        err = copy.copy(err)
        scrub(err, [job.ctx.api_key if job.ctx else None, *self.secrets()])  # it goes into the task record
        job.fail(err, status)
        await self._finished(job)

    async def _finished(self, job: Job) -> None:
        if job.persistent:
            self._forget_request(job)
            await self.ledger.finished(job)
            self.jobs.pop(job.id, None)

    async def _stop(self, job: Job, err: GatewayError, status: str) -> None:
        """End a job from outside its provider (cancel, deadline): stop polling, cancel upstream."""
        self._unpoll(job)
        provider, ctx, handle, runner = job.provider, job.ctx, job.handle, job.runner
        await self.fail(job, err, status)
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()
        cancel = provider.cancel if isinstance(provider, PollingProvider) else None
        if cancel is not None and ctx is not None and handle is not None:
            try:
                async with asyncio.timeout(15):
                    await cancel(handle, ctx)
            except Exception as e:
                log.info("upstream cancel failed", extra={"task_id": job.id, "error": type(e).__name__})

    async def cancel(self, task_id: str) -> Job | TaskRecord | None:
        job = self.jobs.get(task_id)
        if job is None:
            return await self.store.get(task_id) if self.shared is None else await self.shared.cancel(task_id)
        if not job.terminal:
            err = GatewayError("The task was cancelled.", status=409, type="invalid_request_error",
                               code="task_cancelled")
            await self._stop(job, err, "cancelled")
        return job
