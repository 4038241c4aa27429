"""The public task object (a documented extension of the Images API), rendered here, not by the engine.

    {id, object: "image.task", model, status, progress, created, result, error[, requires_key]}

It is the body of GET /v1/images/tasks/{id}, of a 202 for `Prefer: respond-async`, of the last
event of /events, and of a finished task's webhook.
"""

from __future__ import annotations

from typing import Any

from ..engine.jobs import KEY_REQUIRED_MESSAGE, Job
from ..engine.store import TaskRecord
from ..schemas.responses import encode


def task_object(rec: TaskRecord, requires_key: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": rec.id, "object": "image.task", "model": rec.model, "status": rec.status, "progress": rec.progress,
        "created": int(rec.created), "result": rec.result, "error": rec.error,
    }
    if requires_key:
        obj["requires_key"] = True
        obj["error"] = {"message": KEY_REQUIRED_MESSAGE.replace("{id}", rec.id), "type": "invalid_request_error",
                        "param": None, "code": "provider_key_required"}
    return obj


def view(found: Job | TaskRecord) -> dict[str, Any]:
    """The task object of a live job or of a stored record."""
    if isinstance(found, Job):
        return task_object(found.record(), found.requires_key)
    return task_object(found)


def webhook_body(rec: TaskRecord) -> bytes:
    return encode(task_object(rec))
