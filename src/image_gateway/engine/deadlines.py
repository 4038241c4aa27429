"""Job deadlines for synchronous calls, enforced by one shared sweeper instead of a timer each.

`asyncio.timeout()` schedules and cancels a timer per request; on the hot path that was about a
tenth of the gateway's own CPU per request. Deadlines are minutes long, so a sweeper that wakes
every `tick_s` while calls are in flight is precise enough: an expired call's task is cancelled
and the caller turns that CancelledError into a 504 timeout.
"""

from __future__ import annotations

import asyncio


class Deadlines:
    def __init__(self, tick_s: float = 0.1) -> None:
        self.tick_s = tick_s
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def enter(self, deadline: float) -> asyncio.Task[object]:
        """Watch the current task until `leave()`; it is cancelled if `deadline` (loop time) passes."""
        task: asyncio.Task[object] = asyncio.current_task()  # type: ignore[assignment]
        self._due[task] = deadline
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return task

    def leave(self, task: asyncio.Task[object]) -> None:
        # Runs right after the watched await returns, with no await in between: the sweeper can only
        # ever cancel a task that is still suspended inside the watched call.
        self._due.pop(task, None)

    def expired(self, task: asyncio.Task[object]) -> bool:
        """True (once) when the sweeper cancelled `task` for its deadline, not someone else."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._due:
                await asyncio.sleep(self.tick_s)
                now = loop.time()
                for task, deadline in list(self._due.items()):
                    if now >= deadline:
                        del self._due[task]
                        self._expired.add(task)
                        task.cancel()
        finally:
            self._sweeper = None
