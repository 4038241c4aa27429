"""What the engine needs from the layer that serves tasks, given to it at construction.

The engine knows neither HTTP nor the public task shape: the API layer implements this
(api/tasks.py `TaskService`) and hands it to the Engine's constructor (through runtime.py).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..core.types import CallContext, ProviderResult
from ..providers.base import Provider
from .jobs import Job
from .store import TaskRecord


class TaskHost(Protocol):
    async def render(self, job: Job, result: ProviderResult) -> dict[str, Any]:
        """A finished task's result body (the ImagesResponse), delivered the way its request asked."""
        ...

    def resolve(self, rec: TaskRecord, key: str | None) -> tuple[Provider, CallContext]:
        """The provider and context a stored task is polled with again (after a restart). Raises
        AuthError when its key is needed, another GatewayError when it cannot run any more."""
        ...

    def submit(self, job: Job, keys: Any) -> None:
        """Start the run phase of a stored task never sent upstream, with the caller's key source
        (opaque here) or None for the configured keys."""
        ...

    def webhook_body(self, rec: TaskRecord) -> bytes:
        """The body POSTed to a finished task's webhook."""
        ...
