"""Per-key rate limits (requests per minute, concurrent jobs): the counting. The HTTP side (who the
caller is, the 429) is api/ratelimit.py.

State is in memory, per process: with N worker processes each enforces the limit on its own
share, so the effective limit is up to N times the configured one. With REDIS_URL,
routing/shared_limits.py counts instead: one limit for every process.
"""

from __future__ import annotations

from ..core.settings import KeyLimit

_MAX_BUCKETS = 10_000


class _Bucket:
    __slots__ = ("inflight", "stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp
        self.inflight = 0


class Limiter:
    """A token bucket (capacity = rpm, refilled at rpm/60 per second) and a counter per key."""

    def __init__(self) -> None:
        self.buckets: dict[str, _Bucket] = {}

    def acquire(self, who: str, lim: KeyLimit, now: float) -> tuple[str | None, float]:
        """(None, 0) and a slot taken, or (reason, seconds to wait) when over a limit."""
        b = self.buckets.get(who)
        if b is None:
            if len(self.buckets) >= _MAX_BUCKETS:
                self._prune(now)
            b = self.buckets[who] = _Bucket(lim.rpm, now)
        if lim.concurrent and b.inflight >= lim.concurrent:
            return "concurrent", 1.0
        if lim.rpm:
            rate = lim.rpm / 60.0
            b.tokens = min(lim.rpm, b.tokens + (now - b.stamp) * rate)
            b.stamp = now
            if b.tokens < 1.0:
                return "rpm", (1.0 - b.tokens) / rate
            b.tokens -= 1.0
        b.inflight += 1
        return None, 0.0

    def release(self, who: str) -> None:
        b = self.buckets.get(who)
        if b is not None:
            b.inflight -= 1

    def _prune(self, now: float) -> None:
        for k in [k for k, b in self.buckets.items() if b.inflight == 0]:
            del self.buckets[k]
