"""Equal gateway processes sharing tasks through Redis (REDIS_URL): who polls what, and who hears it.

* Leases: every task this process holds is renewed every TASK_LEASE_S / 3 (one script for all of
  them). A process that dies stops renewing; its leases expire after TASK_LEASE_S and a takeover
  scan, run by every process every `scan_s`, claims them (each a fair share) and resumes them as a
  restart would (engine/recovery.py: polled again, submitted if never sent, never resent if caught
  mid-submit, webhook delivered if still pending). A graceful shutdown releases its leases at once.
* Events: the poller publishes each task's progress (batched, fenced) to `ig:ev:<id>`; any process
  that streams a task it does not poll subscribes there (one pub/sub connection per process).
* Cancel: DELETE on a process that does not poll the task marks it (durably) and broadcasts on
  `ig:ctl`; the poller cancels it upstream. Nobody holding it: the caller's process claims it itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import msgspec

from ..core.types import Progress
from ..state.redis import guarded
from .redis_store import RedisTaskStore
from .store import TERMINAL, TaskRecord

log = logging.getLogger("image_gateway.engine")
CANCEL_WAIT_S = 5.0  # how long a DELETE on another process waits to see the poller's answer

Claimed = list[tuple[TaskRecord, bool]]


class Fleet:
    def __init__(self, store: RedisTaskStore, lease_s: float) -> None:
        self.store = store
        self.renew_s = max(lease_s / 3, 0.05)
        self.scan_s = min(1.0, max(lease_s / 4, 0.05))
        self.ctl = f"{store.p}ctl"
        self._progress: dict[str, tuple[str, int]] = {}
        self._subs: dict[bytes, set[asyncio.Queue[dict[str, Any] | None]]] = {}
        self._pubsub: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self._bg: set[asyncio.Task[object]] = set()
        self._take_over: Callable[[Claimed], Coroutine[Any, Any, None]] | None = None
        self._cancel: Callable[[str], Coroutine[Any, Any, object]] | None = None
        self._resave: Callable[[list[str]], Coroutine[Any, Any, None]] | None = None
        self.healthy = True

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        t = asyncio.create_task(coro)
        self._bg.add(t)
        t.add_done_callback(self._bg.discard)

    @property
    def leases(self) -> int:
        return len(self.store.held)

    def start(self, take_over: Callable[[Claimed], Coroutine[Any, Any, None]],
              cancel: Callable[[str], Coroutine[Any, Any, object]],
              resave: Callable[[list[str]], Coroutine[Any, Any, None]]) -> None:
        self._take_over, self._cancel, self._resave = take_over, cancel, resave
        self._pubsub = self.store.client.pubsub()
        for coro in (self._renew_loop(), self._scan_loop(), self._listen_loop()):
            self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._tasks, *self._bg]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._tasks.clear()
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()

    # -- leases -------------------------------------------------------------------------------------

    async def _every(self, seconds: float, step: Callable[[], Coroutine[Any, Any, bool]], what: str) -> None:
        """Run `step` every `seconds`; one that says there is more runs again at once."""
        while True:
            try:
                more = await step()
                self.healthy = True
                if more:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis away: try again next round (nothing is lost meanwhile)
                if self.healthy:
                    log.warning(f"{what} failed; retrying", extra={"error": type(e).__name__})
                self.healthy = False
            await asyncio.sleep(seconds)

    async def _renew_loop(self) -> None:
        async def step() -> bool:
            gone = await self.store.renew()
            if gone and self._resave is not None:
                await self._resave(gone)
            return False

        await self._every(self.renew_s, step, "renewing task leases")

    async def _scan_loop(self) -> None:
        async def step() -> bool:
            claimed = await self.store.claim()
            if claimed and self._take_over is not None:
                log.info("tasks taken over", extra={"tasks": len(claimed)})
                self._spawn(self._resume(claimed))  # (the leases are ours: resuming them can follow)
            return bool(claimed)  # (a share taken: look again for what the others left)

        await self._every(self.scan_s, step, "scanning for unleased tasks")

    async def _resume(self, claimed: Claimed) -> None:
        assert self._take_over is not None
        try:
            await self._take_over(claimed)
        except Exception:
            log.exception("resuming tasks taken over failed", extra={"tasks": len(claimed)})

    # -- progress out ---------------------------------------------------------------------------------

    def progress(self, task_id: str, status: str, percent: int) -> None:
        self._progress[task_id] = (status, percent)

    async def flush(self) -> None:
        if self._progress:
            items, self._progress = self._progress, {}
            try:
                await self.store.progress([(k, s, p) for k, (s, p) in items.items()])
            except Exception as e:  # live progress only: the next change is published again
                log.info("publishing task progress failed", extra={"error": type(e).__name__})

    # -- events in ----------------------------------------------------------------------------------

    async def _listen_loop(self) -> None:
        ps = self._pubsub
        while True:
            try:
                if not ps.subscribed:
                    await ps.subscribe(self.ctl, *self._subs)
                msg = await ps.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                await asyncio.sleep(0.2)  # redis-py reconnects and resubscribes on the next read
                continue
            if msg is None or msg.get("type") != "message":
                continue
            channel, data = msg["channel"], msg["data"]
            if channel == self.ctl.encode():
                task_id = data.decode()
                if task_id.startswith("cancel:") and self._cancel is not None:
                    self._spawn(self._cancel(task_id[7:]))
                continue
            try:
                event = msgspec.json.decode(data)
            except msgspec.DecodeError:
                continue
            for q in list(self._subs.get(channel, ())):
                q.put_nowait(event)

    async def _subscribe(self, channel: bytes) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        first = channel not in self._subs
        self._subs.setdefault(channel, set()).add(q)
        if first:
            try:
                async with guarded("task events"):
                    await self._pubsub.subscribe(channel)
            except BaseException:
                self._unsubscribe(channel, q)
                raise
        return q

    def _unsubscribe(self, channel: bytes, q: asyncio.Queue[dict[str, Any] | None]) -> None:
        qs = self._subs.get(channel)
        if qs is None:
            return
        qs.discard(q)
        if not qs:
            del self._subs[channel]
            self._spawn(self._quiet_unsubscribe(channel))

    async def _quiet_unsubscribe(self, channel: bytes) -> None:
        with contextlib.suppress(Exception):
            if channel not in self._subs:
                await self._pubsub.unsubscribe(channel)

    async def follow(self, task_id: str) -> AsyncIterator[Progress]:
        """Progress of a task another process polls, until it ends (or is gone)."""
        channel = f"{self.store.p}ev:{task_id}".encode()
        q = await self._subscribe(channel)
        try:
            rec = await self.store.get(task_id)  # after subscribing: nothing published meanwhile is missed
            if rec is None or rec.status in TERMINAL:
                return
            yield Progress(rec.progress, None, rec.status)
            while True:
                event = await q.get()
                if event is None or "end" in event:
                    return
                yield Progress(int(event.get("p", 0)), None, str(event.get("s", "in_progress")))
        finally:
            self._unsubscribe(channel, q)

    async def cancel(self, task_id: str) -> Claimed:
        """Cancel a task this process does not poll. Its lease was free: it is claimed and returned (the
        caller cancels it itself); else its poller is told and gets CANCEL_WAIT_S to do it ([])."""
        await self.store.ask_cancel(task_id)
        claimed = await self.store.claim([task_id])
        if claimed:
            return claimed
        channel = f"{self.store.p}ev:{task_id}".encode()
        q = await self._subscribe(channel)
        try:
            async with guarded("the task"):
                await self.store.client.publish(self.ctl, f"cancel:{task_id}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CANCEL_WAIT_S):
                    while True:
                        event = await q.get()
                        if event is None or "end" in event:
                            break
        finally:
            self._unsubscribe(channel, q)
        return []
