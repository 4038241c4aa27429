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
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from ..core.types import (
    CallContext,
    ImageRequest,
    Pending,
    PollOutcome,
    Progress,
    ProviderEvent,
    ProviderResult,
    Submitting,
)
from ..errors import GatewayError, UpstreamError, UpstreamTimeout, scrub
from ..providers.base import PollingProvider, Provider, SyncProvider
from ..providers.base import events as provider_events
from ..state.redis import StateUnavailable
from .deadlines import Deadlines
from .fleet import Fleet
from .host import TaskHost
from .inputs import InputStore
from .jobs import Job
from .ledger import Ledger
from .owners import SECRET_FILE, Owners
from .poller import Poller, PollSettings
from .recovery import Recovery
from .shared import SharedTasks
from .store import MemoryTaskStore, TaskRecord, TaskStore
from .webhooks import WebhookSender

log = logging.getLogger("image_gateway.engine")

SUBMIT_GRACE_S = 5.0  # on shutdown, how long a submission under way may finish (else: outcome unknown)


class Engine:
    def __init__(self, poll_interval_s: float = 2.0, *, store: TaskStore | None = None,
                 webhooks: WebhookSender | None = None, secrets: Callable[[], list[str]] | None = None,
                 task_ttl_s: float = 7 * 24 * 3600.0, host: TaskHost | None = None, fleet: Fleet | None = None) -> None:
        self.poll_interval_s = poll_interval_s
        self.store: TaskStore = fleet.store if fleet is not None else store if store is not None else MemoryTaskStore()
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
        self.fleet = fleet  # shared tasks (REDIS_URL): leases, takeover, events across processes
        self.shared = SharedTasks(self, fleet) if fleet is not None else None

    # -- running a job ------------------------------------------------------------------------------

    def configure(self, data_dir: Path, owner_secret: str | None) -> None:
        """Where task owners' secret and queued tasks' input images live (before `start`)."""
        self.owners = Owners(data_dir / SECRET_FILE, owner_secret)
        self.inputs = InputStore(data_dir / "task_inputs")

    def new_job(self, model: str, route: str, delivery: dict[str, Any] | None = None) -> Job:
        return Job(model, route, delivery)

    async def events(self, provider: Provider, req: ImageRequest, ctx: CallContext,
                     job: Job | None = None) -> AsyncIterator[ProviderEvent]:
        """Every event of the job; the last one is the ProviderResult (or, detached, the Pending).
        `job`: the caller's, unless it has ended (an attempt after that, e.g. a retry on timeout,
        gets a job of its own)."""
        if job is not None and job.terminal:
            job = None
        deadline = ctx.deadline or None
        complete = provider.generate if not req.stream and isinstance(provider, SyncProvider) else None
        if job is not None and job.submit is not None:  # a stored task not sent yet (never a plain request)
            if complete is not None or not provider.signals_submit:
                await self.submitting(job)
        if complete is not None:
            yield await self._complete(complete, req, ctx, job)
            return
        it = provider_events(provider, req, ctx)
        pending: Pending | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        ev = await anext(it)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise UpstreamTimeout("The image job did not finish before its deadline.", retryable=False) \
                        from None
                if isinstance(ev, Submitting):
                    if job is not None and job.submit is not None:
                        await self.submitting(job)
                    continue
                if isinstance(ev, Pending):
                    pending = ev
                    break
                if job is not None and job.persistent:  # a task: keep its state (never on the hot path)
                    if isinstance(ev, Progress):
                        job.update(ev)
                    elif isinstance(ev, ProviderResult):
                        await self.complete(job, ev)  # e.g. a fallback to a sync provider ended it
                yield ev
                if isinstance(ev, ProviderResult):
                    return
        except GatewayError as e:
            if job is not None and job.submit == "submitting" and e.retryable:
                # Nothing can have been made (e.g. refused before acceptance): safe to send after a restart.
                job.submit = "waiting"
                self._spawn(self.ledger.save([job]))
            raise
        finally:
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                await aclose()
        if pending is None:
            raise UpstreamError(f"{provider.name} ended without a result")
        if not isinstance(provider, PollingProvider):
            raise UpstreamError(f"{provider.name} handed back a task to poll but is not a PollingProvider")
        if job is None:  # a caller that did not set up a job (e.g. an internal one): make one
            job = Job(req.model, req.model)
        q = None if job.detached else job.listen()
        if q is not None:
            job.waiters += 1
        try:
            await self.adopt(job, provider, ctx, pending.handle)
            if q is None:
                yield pending
                return
            async for ev in job.drain(q):
                yield ev
        finally:
            if q is not None:
                job.unlisten(q)
                job.waiters -= 1

    async def result(self, provider: Provider, req: ImageRequest, ctx: CallContext,
                     job: Job | None = None) -> ProviderResult:
        """The job's result without its events (a caller that does not stream)."""
        if not req.stream and isinstance(provider, SyncProvider):
            return await self._complete(provider.generate, req, ctx, None if job is None or job.terminal else job)
        async for ev in self.events(provider, req, ctx, job):
            if isinstance(ev, ProviderResult):
                return ev
        raise UpstreamError(f"{provider.name} ended without a result")

    async def _complete(self, complete: Callable[[ImageRequest, CallContext], Awaitable[ProviderResult]],
                        req: ImageRequest, ctx: CallContext, job: Job | None) -> ProviderResult:
        """A synchronous provider's one awaited call (the hot path): no event generator, no task."""
        deadline = ctx.deadline or None
        watched = self.deadlines.enter(deadline) if deadline is not None else None
        try:
            result = await complete(req, ctx)
        except asyncio.CancelledError:
            if watched is not None and self.deadlines.expired(watched):
                raise UpstreamTimeout("The image job did not finish before its deadline.", retryable=False) from None
            raise
        finally:
            if watched is not None:
                self.deadlines.leave(watched)
        if job is not None and job.persistent:
            await self.complete(job, result)
        return result

    # -- tasks --------------------------------------------------------------------------------------

    async def open_task(self, job: Job, inputs: Sequence[bytes] = ()) -> None:
        """A detached job: registered and stored (its input images first) before anything is sent
        upstream. `job.request` and `job.submit = "waiting"` let a restart submit it."""
        job.persistent = True
        if inputs:
            await self.inputs.put(job.id, inputs)
        self.jobs[job.id] = job
        if not await self.ledger.write([job.record()]) and self.fleet is not None:
            self.jobs.pop(job.id, None)  # not stored where every process finds it: no 202
            self.fleet.store.forget(job.id)
            raise StateUnavailable("an async task")

    async def submitting(self, job: Job) -> None:
        """Durably mark a stored task as being sent upstream, before it is (see the module docstring)."""
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
