"""A Job: one request's image work, with its state and an event fan-out to any number of listeners.

Every request gets one (a few attributes in memory). A synchronous job lives and dies with its
request. A job becomes a *task* when its provider hands back a Pending handle or the caller asked
for `Prefer: respond-async`: then the engine registers it, stores it (without its key) and polls it,
and it survives the request that started it.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..core.types import CallContext, Progress, ProviderEvent, ProviderResult
from ..errors import GatewayError
from ..providers.base import Provider
from .store import TERMINAL, TaskRecord

KEY_REQUIRED_MESSAGE = (
    "The gateway restarted while this task was running. It was started with your own provider key, "
    "which the gateway never stores: send the key again (X-Provider-Key, or Authorization when the "
    "gateway has no keys of its own) on GET /v1/images/tasks/{id} to resume it.")


def new_task_id() -> str:
    return "imgtask_" + os.urandom(12).hex()


class _End:
    """The terminal item of a listener's queue."""

    __slots__ = ("error", "result")

    def __init__(self, result: ProviderResult | None, error: GatewayError | None) -> None:
        self.result = result
        self.error = error


Listener = asyncio.Queue[Progress | _End]


class Job:
    __slots__ = (
        "_id", "_listeners", "_preview_key", "created", "ctx", "deadline_at", "delivery", "detached",
        "endpoint", "error", "handle", "key_fp", "key_source", "model", "owner", "persistent", "progress", "provider",
        "request", "requires_key", "result", "resumed", "route", "runner", "status", "submit", "task_fn", "updated",
        "waiters", "webhook_status", "webhook_url",
    )

    def __init__(self, model: str, route: str, delivery: dict[str, Any] | None = None, job_id: str | None = None,
                 created: float | None = None) -> None:
        self._id = job_id  # drawn on first use: most jobs (synchronous ones) never need one
        self.model = model
        self.route = route
        self.delivery: dict[str, Any] = delivery or {}
        self.created = created or time.time()
        self.updated = self.created
        self.status = "queued"
        self.progress = 0
        self.result: dict[str, Any] | None = None  # the rendered ImagesResponse
        self.error: GatewayError | dict[str, Any] | None = None
        self.detached = False  # respond-async: nobody waits on the request
        self.persistent = False  # registered with the engine and kept in the TaskStore
        self.provider: Provider | None = None
        self.ctx: CallContext | None = None  # holds the key: memory only
        self.handle: dict[str, Any] | None = None
        self.endpoint: str | None = None
        self.key_source = "configured"
        self.requires_key = False  # restarted without the caller's key
        self.resumed = False
        self.webhook_url: str | None = None
        self.webhook_status: str | None = None
        self.runner: asyncio.Task[None] | None = None  # the run phase of a detached job
        self.waiters = 0  # requests waiting on this job's result (not /events watchers)
        self.deadline_at: float | None = None  # unix seconds, kept while the job has no context
        # Ownership, key and submission state of a task (engine/store.py): set only once it is one.
        self.owner: str | None = None
        self.key_fp: str | None = None
        self.request: dict[str, Any] | None = None
        self.submit: str | None = None
        # Fills in what only a task needs (delivery["base_url"], the owner's fingerprint) the first time
        # the job is recorded: working them out costs µs, and most jobs never become tasks.
        self.task_fn: Callable[[Job], None] | None = None
        self._listeners: list[Listener] = []
        self._preview_key: tuple[Any, ...] | None = None

    # -- state -------------------------------------------------------------------------------------

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def deadline(self) -> float:
        """loop.time() by which the job must end (infinity when its context sets none)."""
        return self.ctx.deadline if self.ctx is not None and self.ctx.deadline else float("inf")

    def attach(self, provider: Provider, ctx: CallContext, handle: dict[str, Any]) -> None:
        self.provider, self.ctx, self.handle = provider, ctx, handle
        settings = provider.settings  # (None for an adapter made without settings, e.g. in tests)
        self.endpoint = settings.base_url if settings is not None else None
        configured = settings.api_key if settings is not None else None
        self.key_source = "configured" if ctx.api_key is None or ctx.api_key == configured else "request"
        self.requires_key = False
        self.submit = None  # the upstream has it: nothing is sent again, whatever happens next

    @property
    def id(self) -> str:
        if self._id is None:
            self._id = new_task_id()
        return self._id

    def update(self, ev: Progress) -> bool:
        """Apply a progress report; publish it if anything a caller can see changed."""
        if self.terminal:
            return False
        status = "queued" if ev.status == "queued" and self.status == "queued" else "in_progress"
        percent = max(self.progress, min(99, max(0, int(ev.percent))))
        preview = ev.preview
        new_preview = False
        if preview is not None:
            key = (preview.url or (preview.b64 or "")[:64], percent)
            new_preview = key != self._preview_key
            self._preview_key = key
        if status == self.status and percent == self.progress and not new_preview:
            return False
        self.status, self.progress, self.updated = status, percent, time.time()
        self._publish(Progress(percent, preview if new_preview else None, status))
        return True

    def succeed(self, result: ProviderResult, body: dict[str, Any] | None) -> None:
        self.status, self.progress, self.result, self.updated = "succeeded", 100, body, time.time()
        self._end(_End(result, None))

    def fail(self, err: GatewayError, status: str = "failed") -> None:
        self.status, self.error, self.updated = status, err, time.time()
        self._end(_End(None, err))

    def reopen(self, err: GatewayError) -> None:
        """An attempt failed while a caller waits and may try again (retry, fallback): hand the caller
        the error, keep the job open for the next attempt."""
        self._publish(_End(None, err))
        self.status, self.progress, self.updated = "queued", 0, time.time()
        self.provider = self.ctx = self.handle = None
        self._preview_key = None

    def _end(self, item: _End) -> None:
        self._publish(item)
        self.ctx = None  # the key goes with the job's end
        self.runner = None

    # -- fan-out -----------------------------------------------------------------------------------

    def listen(self) -> Listener:
        q: Listener = asyncio.Queue()
        self._listeners.append(q)
        return q

    def unlisten(self, q: Listener) -> None:
        if q in self._listeners:
            self._listeners.remove(q)

    def _publish(self, item: Progress | _End) -> None:
        for q in self._listeners:
            q.put_nowait(item)

    async def drain(self, q: Listener) -> AsyncIterator[ProviderEvent]:
        """Progress events from `q`, then the ProviderResult; raises the job's error instead."""
        while True:
            item = await q.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise copy.copy(item.error)
                assert item.result is not None
                yield item.result
                return
            yield item

    # -- views -------------------------------------------------------------------------------------

    def error_object(self) -> dict[str, Any] | None:
        if isinstance(self.error, GatewayError):
            return self.error.body()["error"]
        if self.error is None and self.requires_key:
            return {"message": KEY_REQUIRED_MESSAGE.replace("{id}", self.id), "type": "invalid_request_error",
                    "param": None, "code": "provider_key_required"}
        return self.error

    def record(self) -> TaskRecord:
        if self.task_fn is not None:
            fn, self.task_fn = self.task_fn, None
            fn(self)
        deadline_at = self.deadline_at
        if self.ctx is not None and self.ctx.deadline:
            deadline_at = time.time() + (self.ctx.deadline - asyncio.get_running_loop().time())
        return TaskRecord(
            id=self.id, model=self.model, route=self.route, status=self.status, created=self.created,
            updated=self.updated, key_source=self.key_source, provider=self.provider.name if self.provider else None,
            endpoint=self.endpoint, progress=self.progress, handle=self.handle, delivery=self.delivery,
            result=self.result, error=self.error_object() if self.terminal else None, webhook_url=self.webhook_url,
            webhook_status=self.webhook_status, deadline_at=deadline_at, owner=self.owner, key_fp=self.key_fp,
            request=self.request, submit=self.submit)

    @classmethod
    def from_record(cls, rec: TaskRecord) -> Job:
        job = cls(rec.model, rec.route, rec.delivery, rec.id, rec.created)
        job.status, job.progress, job.updated, job.handle = rec.status, rec.progress, rec.updated, rec.handle
        job.result, job.error, job.endpoint, job.key_source = rec.result, rec.error, rec.endpoint, rec.key_source
        job.webhook_url, job.webhook_status, job.persistent = rec.webhook_url, rec.webhook_status, True
        job.deadline_at, job.owner, job.key_fp = rec.deadline_at, rec.owner, rec.key_fp
        job.request, job.submit = rec.request, rec.submit
        return job

