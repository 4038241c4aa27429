"""Where async tasks live between requests and across restarts: the TaskStore interface.

A record holds what is needed to show a task and to resume polling it, and never a key:
`key_source` says where the key came from ("configured": the gateway's own, found again after a
restart; "request": the caller's, held only in process memory and asked for again after a restart).
`owner` and `key_fp` are keyed fingerprints (engine/owners.py) of who created the task and of the
caller's key it runs with, so only they can read it and only that key resumes it.

An async task is stored from its 202 on. Until the upstream accepts it, `request` holds the
validated request (no key; input images are kept beside it, engine/inputs.py) and `submit` says
how far it got: "waiting" (in the gateway's queue, nothing sent: safe to submit after a restart)
or "submitting" (the upstream call was under way: it may have been accepted and billed, so a
restart does not send it again). Once a `handle` is stored both are cleared.
SQLite (engine/sqlite_store.py) is the embedded default; a Redis store implements the same Protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
KeySourceName = Literal["configured", "request"]
# webhook_status: None (no webhook), "pending" (to deliver), "delivered", "failed" (gave up)


@dataclass(slots=True)
class TaskRecord:
    id: str
    model: str  # what the caller asked for
    route: str  # the route that served it
    status: str
    created: float  # unix seconds
    updated: float
    key_source: str = "configured"
    provider: str | None = None  # provider name of the attempt that was accepted upstream
    endpoint: str | None = None  # that provider instance's base URL (several may serve one provider)
    progress: int = 0
    handle: dict[str, Any] | None = None  # the provider's Pending handle (JSON, no key)
    delivery: dict[str, Any] = field(default_factory=dict)  # how to render the result (format, base URL)
    result: dict[str, Any] | None = None  # the ImagesResponse body, once succeeded
    error: dict[str, Any] | None = None  # OpenAI error object ({message,type,param,code}), once failed
    webhook_url: str | None = None
    webhook_status: str | None = None
    deadline_at: float | None = None  # unix seconds
    owner: str | None = None  # fingerprint of the creator's credential (None: only the admin key reads it)
    key_fp: str | None = None  # fingerprint of the caller's provider key, when key_source is "request"
    request: dict[str, Any] | None = None  # the validated request, until the upstream accepted it
    submit: str | None = None  # None, "waiting" or "submitting" (see above)


class TaskStore(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def save(self, records: Sequence[TaskRecord]) -> None:
        """Insert or replace whole records, all in one write."""
        ...

    async def get(self, task_id: str) -> TaskRecord | None: ...

    async def unfinished(self) -> list[TaskRecord]:
        """Records not in a terminal status (to resume after a restart)."""
        ...

    async def undelivered(self) -> list[TaskRecord]:
        """Terminal records whose webhook is still pending."""
        ...

    async def sweep(self, older_than: float) -> int:
        """Delete terminal records last updated before `older_than` (unix seconds); return how many."""
        ...

    async def recent(self, limit: int, status: str | None = None) -> list[TaskRecord]:
        """The newest `limit` records (by creation), optionally of one status (GET /admin/tasks)."""
        ...


class MemoryTaskStore:
    """A TaskStore in a dict: for tests and for running without a data directory."""

    def __init__(self) -> None:
        self.rows: dict[str, TaskRecord] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def save(self, records: Sequence[TaskRecord]) -> None:
        for r in records:
            self.rows[r.id] = r

    async def get(self, task_id: str) -> TaskRecord | None:
        return self.rows.get(task_id)

    async def unfinished(self) -> list[TaskRecord]:
        return [r for r in self.rows.values() if r.status not in TERMINAL]

    async def undelivered(self) -> list[TaskRecord]:
        return [r for r in self.rows.values() if r.status in TERMINAL and r.webhook_status == "pending"]

    async def sweep(self, older_than: float) -> int:
        gone = [k for k, r in self.rows.items() if r.status in TERMINAL and r.updated < older_than]
        for k in gone:
            del self.rows[k]
        return len(gone)

    async def recent(self, limit: int, status: str | None = None) -> list[TaskRecord]:
        rows = [r for r in self.rows.values() if status is None or r.status == status]
        return sorted(rows, key=lambda r: r.created, reverse=True)[:limit]
