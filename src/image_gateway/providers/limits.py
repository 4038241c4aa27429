"""Per-account concurrency for upstreams that run a few jobs at a time (e.g. a Midjourney account: 3).

`limit` slots in use at once, up to `queue_size` callers waiting in FIFO order for one, and past
that an immediate 429 `queue_full`: a capacity answer ("not now"), so the router pauses this
account's deployment briefly and uses the others, never counting it toward the breaker. Its
Retry-After is `retry_after_s` when configured; otherwise the router says how long it pauses.
Slots are held by upstream tasks, not by requests, so an adapter releases them when its task ends
(poll result, cancel, deadline).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from ..errors import GatewayError


class QueueFull(GatewayError):
    status = 429
    type = "rate_limit_exceeded"
    code = "queue_full"


class AccountLimiter:
    def __init__(self, limit: int = 3, queue_size: int = 10, retry_after_s: float | None = None,
                 what: str = "This upstream account") -> None:
        self.what = what  # how the queue_full message names the account
        self.limit = max(1, limit)
        self.queue_size = max(0, queue_size)
        self.retry_after_s = retry_after_s
        self.in_use = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, n: int = 1) -> int:
        """Take `n` slots (at most `limit`), waiting in line if need be; return how many were taken."""
        n = max(1, min(n, self.limit))
        if not self._waiters and self.in_use + n <= self.limit:
            self.in_use += n
            return n
        if len(self._waiters) >= self.queue_size:
            after = self.retry_after_s
            raise QueueFull(
                f"{self.what} is running {self.in_use} jobs and {len(self._waiters)} more are "
                "waiting; try again later.", retryable=True, capacity=True,
                headers={"Retry-After": str(math.ceil(after))} if after is not None else None)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(n)  # granted just as we were cancelled: give it back
            elif entry in self._waiters:
                self._waiters.remove(entry)
            raise
        return n

    def force(self, n: int) -> None:
        """Count slots already in use upstream (tasks resumed after a restart)."""
        self.in_use += max(0, n)

    def release(self, n: int) -> None:
        self.in_use = max(0, self.in_use - n)
        while self._waiters and self.in_use + self._waiters[0][0] <= self.limit:
            need, fut = self._waiters.popleft()
            if fut.done():
                continue
            self.in_use += need
            fut.set_result(None)
