"""The engine and its poller in-process, against a scripted async provider (no HTTP)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import pytest

from image_gateway.core.types import (
    CallContext,
    GeneratedImage,
    ImageRequest,
    Pending,
    PollOutcome,
    Progress,
    ProviderEvent,
    ProviderResult,
)
from image_gateway.engine.engine import Engine
from image_gateway.engine.jobs import Job
from image_gateway.engine.poller import PollSettings
from image_gateway.engine.store import MemoryTaskStore
from image_gateway.errors import GatewayError, InvalidRequest, UpstreamError, UpstreamTimeout
from image_gateway.providers.base import Capabilities, PollingProvider, RouteSpec, StreamingProvider
from tests.waits import await_until

INTERVAL = 0.02


class Scripted(StreamingProvider, PollingProvider):
    """Each prompt names a script: how many polls to stay in progress, then how to end."""

    name: ClassVar[str] = "scripted"
    env_prefix: ClassVar[str] = "SCRIPTED"
    default_base_url: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities(needs_key=False)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = ()
    poll_interval_s: ClassVar[float | None] = INTERVAL

    def __init__(self) -> None:
        super().__init__(None)
        self.batches: list[list[str]] = []
        self.polls: dict[str, int] = {}
        self.fail_next_calls: list[BaseException] = []
        self.cancelled: list[str] = []

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        yield Progress(0, status="queued")
        yield Pending({"id": req.prompt})

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> Sequence[PollOutcome]:
        ids = [h["id"] for h in handles]
        self.batches.append(ids)
        if self.fail_next_calls:
            raise self.fail_next_calls.pop(0)
        if any(i.startswith("poison") for i in ids):
            raise InvalidRequest("a poisoned batch")
        if any(i.startswith("raiser") for i in ids):  # a task failure raised, not returned (against the contract)
            raise UpstreamError("task raiser failed upstream", retryable=True)
        out: list[PollOutcome] = []
        for h in handles:
            i = h["id"]
            n = self.polls[i] = self.polls.get(i, 0) + 1
            kind, _, steps = i.split("-")[0].partition(":")
            if n <= int(steps or 2) or kind == "hang":
                out.append(Progress(min(n * 30, 99)))
            elif kind == "bad":
                out.append(UpstreamError(f"task {i} failed upstream", code="upstream_task_failed"))
            elif kind == "phase" and "second" not in h:
                out.append(Pending({"id": i + "-2", "second": True}))
            else:
                out.append(ProviderResult([GeneratedImage(url=f"http://img/{i}")]))
        return out

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        self.cancelled.append(handle["id"])

    async def close(self) -> None:
        return None


def ctx(deadline_s: float = 10.0, **options: Any) -> CallContext:
    return CallContext("m", None, options, "rid", asyncio.get_running_loop().time() + deadline_s)


def req(prompt: str) -> ImageRequest:
    return ImageRequest(operation="generate", prompt=prompt, model="m")


async def collect(engine: Engine, p: Scripted, prompt: str, deadline_s: float = 10.0, *, job: Job | None = None,
                  **options: Any) -> list[ProviderEvent]:
    return [ev async for ev in engine.events(p, req(prompt), ctx(deadline_s, **options), job)]


async def test_many_jobs_cost_one_poll_per_tick() -> None:
    engine, p = Engine(), Scripted()
    results = await asyncio.gather(*(collect(engine, p, f"ok{i}:3") for i in range(200)))
    assert all(isinstance(evs[-1], ProviderResult) for evs in results)
    assert max(len(b) for b in p.batches) == 100  # poll_batch_size
    assert len(p.batches) <= 12, [len(b) for b in p.batches]  # ~4 rounds of 2 batches, not 800 calls
    assert engine.polls == len(p.batches)
    await engine.close()


async def test_a_returned_error_ends_only_its_own_job() -> None:
    engine, p = Engine(), Scripted()
    results = await asyncio.gather(collect(engine, p, "ok"), collect(engine, p, "bad"), return_exceptions=True)
    assert isinstance(results[0], list) and isinstance(results[0][-1], ProviderResult)
    assert isinstance(results[1], UpstreamError) and results[1].code == "upstream_task_failed"
    await engine.close()


async def test_a_raising_batch_is_split_to_find_the_culprit() -> None:
    engine, p = Engine(), Scripted()
    results = await asyncio.gather(collect(engine, p, "ok-a"), collect(engine, p, "poison"),
                                   collect(engine, p, "ok-b"), return_exceptions=True)
    assert isinstance(results[1], GatewayError) and "poisoned" in results[1].message
    assert all(isinstance(r, list) and isinstance(r[-1], ProviderResult) for r in (results[0], results[2])), results
    assert [len(b) for b in p.batches[:4]] == [3, 1, 1, 1]  # the batch failed; each alone tells whose error
    await engine.close()


async def test_a_handle_that_keeps_raising_is_isolated_then_fails() -> None:
    engine, p = Engine(), Scripted()
    opts: dict[str, Any] = {"poll_error_limit": 4, "poll_max_interval_s": 0.05}
    results = await asyncio.gather(collect(engine, p, "ok-1:4", **opts), collect(engine, p, "raiser", **opts),
                                   collect(engine, p, "ok-2:4", **opts), return_exceptions=True)
    assert isinstance(results[1], UpstreamError) and "4 times in a row" in results[1].message
    assert all(isinstance(r, list) and isinstance(r[-1], ProviderResult) for r in (results[0], results[2])), results
    assert ["raiser"] in p.batches  # polled alone once it had failed twice
    await engine.close()


async def test_transient_poll_errors_are_retried_with_backoff() -> None:
    engine, p = Engine(), Scripted()
    p.fail_next_calls = [UpstreamError("blip", retryable=True), TimeoutError()]
    evs = await collect(engine, p, "ok:1")
    assert isinstance(evs[-1], ProviderResult)
    assert len(p.batches) >= 3
    await engine.close()


async def test_a_second_phase_handle_replaces_the_first() -> None:
    engine, p = Engine(), Scripted()
    evs = await collect(engine, p, "phase:1")
    last = evs[-1]
    assert isinstance(last, ProviderResult) and last.images[0].url == "http://img/phase:1-2"
    await engine.close()


async def test_deadline_ends_the_job_with_504_and_cancels_upstream() -> None:
    engine, p = Engine(), Scripted()
    with pytest.raises(UpstreamTimeout) as ei:
        await collect(engine, p, "hang", deadline_s=0.15)
    assert ei.value.status == 504 and ei.value.code == "timeout"
    await await_until(lambda: p.cancelled == ["hang"], what="the upstream cancel")
    await engine.close()


async def test_progress_is_published_once_per_change_and_the_job_is_stored() -> None:
    store = MemoryTaskStore()
    engine, p = Engine(store=store), Scripted()
    job = Job("m", "route")
    evs = await collect(engine, p, "ok:3", job=job)
    assert [e.percent for e in evs if isinstance(e, Progress)] == [0, 30, 60, 90]
    # The caller hears first, the store is written right after.
    await await_until(lambda: store.rows[job.id].status == "succeeded", what="the stored job")
    assert job.status == "succeeded" and store.rows[job.id].status == "succeeded"
    assert store.rows[job.id].handle == {"id": "ok:3"} and store.rows[job.id].key_source == "configured"
    await engine.close()


async def test_a_detached_job_is_finished_by_the_poller() -> None:
    store = MemoryTaskStore()
    engine, p = Engine(store=store), Scripted()
    job = Job("m", "route")
    job.detached = True
    await engine.open_task(job)
    evs = await collect(engine, p, "ok:1", job=job)
    assert isinstance(evs[-1], Pending)  # handed over: the caller stops here
    assert engine.queue_depth == 1  # polled (the gateway_queue_depth gauge)
    await await_until(lambda: job.terminal, what="the poller to finish the job")
    assert job.status == "succeeded" and store.rows[job.id].status == "succeeded"
    assert engine.queue_depth == 0
    await engine.close()


def test_poll_interval_backs_off_for_long_jobs_and_failures() -> None:
    s = PollSettings(interval_s=2, max_interval_s=30, backoff_after_s=60)
    assert s.interval(10, 0) == 2
    assert s.interval(120, 0) == 4
    assert s.interval(600, 0) == 20
    assert s.interval(6000, 0) == 30
    assert s.interval(10, 2) == 8
    assert PollSettings.from_options({"poll_interval_s": 0.5}, 3).interval_s == 0.5
