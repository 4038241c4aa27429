"""Per-deployment circuit breaker: closed → open (cooling down) → half-open (one probe) → closed.

Beside it, a pause: a capacity answer (429, a full queue) means "not now", not "broken", so it
never counts toward the breaker; it keeps traffic off the deployment until the upstream's
Retry-After, or a short back-off when it named none.

Plain attributes touched only from the event loop: no locks, a few float compares per request.
"""

from __future__ import annotations

from ..errors import GatewayError

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", OPEN: "open", HALF_OPEN: "half_open"}


class Health:
    __slots__ = ("busy", "failures", "not_before", "opened_until", "pause_s", "probing", "state", "total_failures")

    def __init__(self) -> None:
        self.state = CLOSED
        self.failures = 0  # consecutive
        self.total_failures = 0
        self.opened_until = 0.0  # loop time when an open breaker lets one probe through
        self.not_before = 0.0  # an upstream Retry-After: no traffic before this loop time
        self.probing = False  # a half-open probe is in flight
        self.pause_s = 0.0  # the last back-off taken for a capacity answer that named no Retry-After
        self.busy: GatewayError | None = None  # the last capacity answer, told to callers while its pause lasts

    def available(self, now: float) -> bool:
        """Whether a request may be sent now (without claiming the half-open probe)."""
        if now < self.not_before:
            return False
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now >= self.opened_until
        return not self.probing  # HALF_OPEN: only one probe at a time

    def in_service(self, now: float) -> bool:
        """Not cooling down (a Retry-After pause does not count: that is the upstream pacing us)."""
        return self.state != OPEN or now >= self.opened_until

    def acquire(self, now: float) -> bool:
        """Called right before sending: True when this request is the half-open probe."""
        if self.state == OPEN and now >= self.opened_until:
            self.state = HALF_OPEN
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def release_probe(self) -> None:
        """The probe ended without telling us anything about the upstream (cancelled, client error)."""
        self.probing = False

    def success(self) -> bool:
        """Returns True when this closed an open/half-open breaker."""
        was_open = self.state != CLOSED
        self.state = CLOSED
        self.failures = 0
        self.probing = False
        return was_open

    def failure(self, now: float, threshold: int, cooldown_s: float, retry_after_s: float | None = None) -> bool:
        """Count one failure; returns True when this opened the breaker."""
        self.failures += 1
        self.total_failures += 1
        if retry_after_s:
            self.not_before = max(self.not_before, now + retry_after_s)
        was_half_open = self.state == HALF_OPEN
        self.probing = False
        if was_half_open or (threshold > 0 and self.failures >= threshold and self.state == CLOSED):
            self.state = OPEN
            self.opened_until = now + cooldown_s
            return True
        return False

    def pause(self, now: float, seconds: float | None, base: float, cap: float, answer: GatewayError) -> float:
        """A capacity answer: no traffic for `seconds` (the upstream's Retry-After), or, when it named
        none, for a back-off from `base` that doubles while such answers follow one another (up to `cap`).
        The breaker is not touched. Returns the loop time the pause ends."""
        if seconds is not None:
            self.not_before = max(self.not_before, now + seconds)
        elif now >= self.not_before:  # (an answer to a request sent before the running pause adds nothing)
            again = self.pause_s > 0 and now - self.not_before < self.pause_s
            self.pause_s = min(cap, self.pause_s * 2) if again else base
            self.not_before = now + self.pause_s
        self.busy = answer
        return self.not_before

    def paused_answer(self, now: float) -> GatewayError | None:
        """The capacity answer behind a pause still running, if any."""
        return self.busy if self.busy is not None and now < self.not_before else None

    def ready_at(self) -> float:
        """Loop time from which a request may be sent again (for Retry-After when all are out)."""
        t = self.not_before
        if self.state == OPEN:
            t = max(t, self.opened_until)
        return t

    def snapshot(self, now: float) -> dict[str, object]:
        state = self.state
        if state == OPEN and now >= self.opened_until:
            state = HALF_OPEN
        return {"state": STATE_NAMES[state], "consecutive_failures": self.failures,
                "total_failures": self.total_failures,
                "retry_in_s": round(max(self.ready_at() - now, 0.0), 3)}
