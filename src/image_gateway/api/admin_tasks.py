"""GET /admin/tasks: recent async tasks, newest first (for `image-gateway tasks list`).

Behind ADMIN_API_KEY: a task id is the only thing that lets an ordinary caller read a task, so a
list of them is for the operator. Live tasks show their in-memory state (fresher than the store).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..engine.store import TaskRecord
from ..errors import InvalidRequest
from ..runtime import Runtime
from ..schemas.responses import encode
from .admin import _admin
from .task_view import task_object

STATUSES = ("queued", "in_progress", "succeeded", "failed", "cancelled")


async def recent_tasks(rt: Runtime, limit: int = 50, status: str | None = None) -> list[dict[str, Any]]:
    """Task objects of the newest `limit` tasks: the store's records, live jobs' state where running."""
    records: list[TaskRecord] = await rt.engine.store.recent(limit, status)
    live = rt.engine.jobs
    out = []
    for rec in records:
        job = live.get(rec.id)
        out.append(task_object(job.record(), job.requires_key) if job is not None else task_object(rec))
    return out


def _query(request: Request) -> tuple[int, str | None]:
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(STATUSES)}.", param="status")
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise InvalidRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    return int(raw), status


async def list_tasks(request: Request) -> Response:
    rt = _admin(request)
    limit, status = _query(request)
    data = await recent_tasks(rt, limit, status)
    return Response(encode({"object": "list", "data": data}), media_type="application/json")
