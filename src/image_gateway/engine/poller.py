"""One polling scheduler per provider instance: thousands of pending jobs, one task, batched polls.

The scheduler wakes once per tick (the smallest poll interval among its jobs), collects every
handle that is due, groups them by (key, route) — one `provider.poll(handles, ctx)` call can only
carry one key — and polls each group in batches of `poll_batch_size`, each batch in a short-lived
task so a slow upstream never stalls the tick. A job waiting between polls costs a dict entry.

Per-handle back-off: the interval grows with a job's age once it is older than
`poll_backoff_after_s` (long jobs are polled less often, up to `poll_max_interval_s`), and doubles
per consecutive transient poll failure. A handle whose batch failed twice in a row is polled on
its own until it succeeds again (so one bad handle cannot stall its batch-mates), and one that
failed `poll_error_limit` times in a row ends with the last error.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..core.types import CallContext, Pending, PollOutcome, Progress, StreamEvent
from ..errors import GatewayError, UpstreamError
from ..providers.base import PollingProvider
from .jobs import Job

log = logging.getLogger("image_gateway.engine")


@dataclass(frozen=True, slots=True)
class PollSettings:
    interval_s: float = 2.0
    max_interval_s: float = 30.0
    backoff_after_s: float = 60.0
    batch_size: int = 100
    timeout_s: float = 60.0  # one poll call
    error_limit: int = 10  # consecutive failed polls of one handle before its job fails

    @classmethod
    def from_options(cls, options: Mapping[str, Any], default_interval_s: float) -> PollSettings:
        interval = float(options.get("poll_interval_s", default_interval_s))
        return cls(
            interval_s=max(interval, 0.01),
            max_interval_s=max(float(options.get("poll_max_interval_s", max(30.0, interval))), interval),
            backoff_after_s=float(options.get("poll_backoff_after_s", 60.0)),
            batch_size=max(1, int(options.get("poll_batch_size", 100))),
            timeout_s=float(options.get("poll_timeout_s", 60.0)),
            error_limit=max(1, int(options.get("poll_error_limit", 10))),
        )

    def interval(self, age_s: float, failures: int) -> float:
        base = self.interval_s
        if self.backoff_after_s > 0 and age_s > self.backoff_after_s:
            base *= age_s / self.backoff_after_s
        if failures:
            base *= 2 ** min(failures, 6)
        return min(base, self.max_interval_s)


def is_transient(exc: BaseException) -> bool:
    """Worth another poll later: the upstream or the network hiccupped, the task may well be fine."""
    if isinstance(exc, GatewayError):
        return exc.retryable or exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, aiohttp.ClientError | TimeoutError | OSError)


class _Retry:
    """A handle whose poll failed transiently."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


class _Entry:
    __slots__ = ("due", "failures", "inflight", "job", "settings", "since", "solo")

    def __init__(self, job: Job, settings: PollSettings, now: float) -> None:
        self.job = job
        self.settings = settings
        self.since = now
        self.due = now + settings.interval_s
        self.failures = 0
        self.inflight = False
        self.solo = False  # polled alone (it kept failing in a batch)


Dispatch = Callable[[Job, PollOutcome], None]


class Poller:
    def __init__(self, provider: PollingProvider, dispatch: Dispatch, expired: Callable[[Job], None],
                 after_batch: Callable[[], Awaitable[None]]) -> None:
        self.provider = provider
        self._dispatch = dispatch
        self._expired = expired
        self._after_batch = after_batch
        self.entries: dict[str, _Entry] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._batches: set[asyncio.Task[None]] = set()
        self._tick = float("inf")  # seconds between rounds: the smallest interval among the entries
        self.polls = 0  # provider.poll calls made (for tests and metrics)

    def add(self, job: Job, settings: PollSettings, now: bool = False) -> None:
        """Poll `job` from the next tick on (`now`: at that tick, else one interval later)."""
        entry = self.entries[job.id] = _Entry(job, settings, asyncio.get_running_loop().time())
        if now:
            entry.due = entry.since
        self._tick = min(self._tick, settings.interval_s)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=f"poller-{self.provider.name}")
        self._wake.set()

    def remove(self, job_id: str) -> bool:
        return self.entries.pop(job_id, None) is not None

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._batches) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t

    async def _run(self) -> None:
        while True:
            if not self.entries:
                self._wake.clear()
                await self._wake.wait()
                continue
            await asyncio.sleep(self._tick)
            try:
                self._tick = self._round()
            except Exception:  # never let one bad round kill polling for every job
                log.exception("poll round failed", extra={"provider": self.provider.name})

    def _round(self) -> float:
        """Start a poll for every due handle; return the next tick."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        tick = float("inf")
        slack = self._tick * 0.25 if self._tick != float("inf") else 0.0  # align handles to the ticks
        groups: dict[tuple[str | None, str, str], list[_Entry]] = {}
        for e in list(self.entries.values()):
            tick = min(tick, e.settings.interval_s)
            if now >= e.job.deadline:
                self.entries.pop(e.job.id, None)
                self._expired(e.job)
                continue
            if e.inflight or e.due > now + slack or e.job.ctx is None:
                continue
            gk = (e.job.ctx.api_key, e.job.route, e.job.id if e.solo else "")
            groups.setdefault(gk, []).append(e)
        batches = [group[i:i + group[0].settings.batch_size] for group in groups.values()
                   for i in range(0, len(group), group[0].settings.batch_size)]
        # Spread the batches over part of the tick: fired together, their answers arrive together and
        # parsing them back to back stalls the loop (10,000 tasks = 100 batches every interval).
        step = min(self._tick if self._tick != float("inf") else 0.0, 5.0) * 0.5 / max(len(batches), 1)
        for j, batch in enumerate(batches):
            for e in batch:
                e.inflight = True
            t = asyncio.create_task(self._batch(batch, now, j * step))
            self._batches.add(t)
            t.add_done_callback(self._batches.discard)
        return tick

    async def _call(self, handles: Sequence[dict[str, Any]], ctx: CallContext, timeout_s: float
                    ) -> Sequence[PollOutcome]:
        self.polls += 1
        async with asyncio.timeout(timeout_s):
            out = await self.provider.poll(handles, ctx)
        if len(out) != len(handles):
            raise UpstreamError(f"{self.provider.name} answered {len(out)} poll results for {len(handles)} handles")
        return out

    async def _single(self, e: _Entry, ctx: CallContext) -> PollOutcome | _Retry:
        assert e.job.handle is not None
        try:
            return (await self._call([e.job.handle], ctx, e.settings.timeout_s))[0]
        except Exception as exc:
            if is_transient(exc):
                return _Retry(exc)
            return _as_error(exc, self.provider.name)

    async def _batch(self, batch: list[_Entry], started: float, delay: float = 0.0) -> None:
        ctx = batch[0].job.ctx
        outcomes: Sequence[PollOutcome | _Retry]
        try:
            if delay:
                await asyncio.sleep(delay)
            if ctx is None:
                return
            handles = [e.job.handle or {} for e in batch]
            try:
                outcomes = await self._call(handles, ctx, batch[0].settings.timeout_s)
            except Exception as exc:
                if is_transient(exc):
                    log.info("poll failed, will retry", extra={"provider": self.provider.name, "jobs": len(batch),
                                                               "error": type(exc).__name__})
                    outcomes = [_Retry(exc)] * len(batch)
                elif len(batch) > 1 and not (isinstance(exc, GatewayError) and exc.status in (401, 403)):
                    # Find which handles the error belongs to: poll each alone.
                    outcomes = list(await asyncio.gather(*(self._single(e, ctx) for e in batch)))
                else:
                    outcomes = [_as_error(exc, self.provider.name)] * len(batch)
        finally:
            for e in batch:
                e.inflight = False
        for e, out in zip(batch, outcomes, strict=True):
            if self.entries.get(e.job.id) is not e:
                continue  # cancelled or expired meanwhile
            if isinstance(out, _Retry):
                e.failures += 1
                e.solo = e.failures >= 2
                if e.failures < e.settings.error_limit:
                    e.due = started + e.settings.interval(started - e.since, e.failures)
                    continue
                out = _as_error(out.error, self.provider.name)
                out = copy.copy(out)
                out.message = f"{out.message} (polling failed {e.failures} times in a row)"
            if isinstance(out, Progress | Pending | StreamEvent):
                e.failures, e.solo = 0, False
                e.due = started + e.settings.interval(started - e.since, 0)
            else:
                self.entries.pop(e.job.id, None)
            try:
                self._dispatch(e.job, out)
            except Exception:
                log.exception("dispatching a poll result failed", extra={"task_id": e.job.id})
        await self._after_batch()


def _as_error(exc: BaseException, provider: str) -> GatewayError:
    if isinstance(exc, GatewayError):
        return exc
    if not is_transient(exc):
        log.error("poll raised an unexpected error", exc_info=exc, extra={"provider": provider})
    return UpstreamError(f"{provider}: polling the upstream task failed ({type(exc).__name__})")
