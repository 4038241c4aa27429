"""Running one job against one provider: its events, or (a synchronous provider, the hot path) its
one awaited call.

Sync providers finish inside `result()`/`events()` in the caller's own coroutine: nothing is
stored, no task is started. When a provider hands back a Pending handle the job becomes a task
(engine/taskflow.py `adopt`); a caller still waiting gets the same stream of events either way,
ending with the ProviderResult. A detached job yields its Pending back instead of waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..core.types import CallContext, ImageRequest, Pending, Progress, ProviderEvent, ProviderResult, Submitting
from ..errors import GatewayError, UpstreamError, UpstreamTimeout
from ..providers.base import PollingProvider, Provider, SyncProvider
from ..providers.base import events as provider_events
from .deadlines import Deadlines
from .jobs import Job
from .taskflow import TaskFlow


class JobRunner(TaskFlow):
    deadlines: Deadlines  # (set by Engine.__init__)

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
