"""The task API (a documented extension of OpenAI's Images API).

    GET    /v1/images/tasks/{id}         the task object {id, object: "image.task", model, status,
                                         progress, created, result (the ImagesResponse), error}
    GET    /v1/images/tasks/{id}/events  SSE: image.task.progress ..., then image.task.<status>, [DONE]
    DELETE /v1/images/tasks/{id}         cancel (the upstream task too where the provider can)

A task belongs to the caller that created it (api/owner.py: its gateway key, or on a gateway
without keys its provider key); for anyone else it does not exist (404 `task_not_found`, as for
an unknown id), except that the admin key may read (GET, events) any task.

A task started with the caller's own provider key loses that key when the gateway restarts (keys
are never stored): it then reports `requires_key: true`, and its owner's GET that carries the same
key again (X-Provider-Key, or the bearer token when the gateway has no keys of its own) resumes it;
another key does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..core.types import CallContext, ImageRequest, Progress, ProviderResult
from ..engine.jobs import Job
from ..engine.owners import Owners
from ..engine.store import TERMINAL, TaskRecord
from ..errors import AuthError, GatewayError, ModelNotFound
from ..providers.base import Provider
from ..runtime import Runtime
from ..schemas.responses import encode
from . import images, jobs, sse
from .auth import authenticate
from .owner import fingerprint, is_admin
from .task_view import view as _view
from .task_view import webhook_body


class TaskNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "task_not_found"


class TaskService:
    """What the engine needs from the API layer (engine/host.py TaskHost), given to it at construction
    (runtime.py): rendering a task's result and webhook body, finding a stored task's provider
    again, submitting a stored task."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt  # (read only when a task needs it: the Runtime is still being built here)

    async def render(self, job: Job, result: ProviderResult) -> dict[str, Any]:
        return await render(self.rt, job, result)

    def resolve(self, rec: TaskRecord, key: str | None) -> tuple[Provider, CallContext]:
        return resolve(self.rt, rec, key)

    def submit(self, job: Job, keys: Any) -> None:
        jobs.resubmit(self.rt, job, keys)

    def webhook_body(self, rec: TaskRecord) -> bytes:
        return webhook_body(rec)


async def render(rt: Runtime, job: Job, result: ProviderResult) -> dict[str, Any]:
    """A task's ImagesResponse, delivered the way its request asked (stream → b64_json)."""
    d = job.delivery
    req = ImageRequest(operation=d.get("operation", "generate"), prompt="", model=job.model,
                       response_format="b64_json" if d.get("stream") else d.get("response_format"),
                       output_format=d.get("output_format"), output_compression=d.get("output_compression"))
    base = d.get("base_url") or rt.cfg.public_base_url or ""
    # The options of the attempt that ran it (route › deployment › provider), else its route's.
    rehost = job.ctx.options.get("rehost") is not False if job.ctx is not None else d.get("rehost", True)
    return await images.finish(base, rt, req, result, rehost=bool(rehost))


def resolve(rt: Runtime, rec: TaskRecord, key: str | None) -> tuple[Provider, CallContext]:
    """The provider instance and context a stored task is polled with again (after a restart)."""
    router = rt.router
    route = router.resolve(rec.route)
    if rec.provider and route.provider != rec.provider:  # the task ran on a fallback route
        found = next((r for r in router.chain(route) if r.provider == rec.provider), None) or next(
            (r for r in router.cfg.routes.values() if r.provider == rec.provider), None)
        if found is None:
            raise ModelNotFound(f"No route of provider '{rec.provider}' is configured any more.")
        route = found
    deps = list(router.pool.deployments(route))
    dep = next((d for d in deps if d.endpoint.settings.base_url == rec.endpoint), deps[0])
    settings, provider = dep.endpoint.settings, dep.endpoint.provider
    api_key = key or settings.api_key
    if api_key is None and provider.capabilities.needs_key:
        raise AuthError("This task needs its provider key again.")
    deadline = asyncio.get_running_loop().time() + router.deadline_s(route)
    return provider, CallContext(route.upstream_model, api_key, {**settings.options, **route.options},
                                 f"task:{rec.id}", deadline, router.egress)


async def _find(request: Request, read: bool = True) -> tuple[Runtime, Job | TaskRecord]:
    """The caller's task (or, for the admin key reading, anyone's); 404 for everything else."""
    rt: Runtime = request.app.state.rt
    task_id = request.path_params["task_id"]
    admin = read and is_admin(request, rt.cfg)
    keys = None if admin else authenticate(request, rt.cfg)
    found = await rt.engine.find(task_id)
    if found is None or not (admin or Owners.same(found.owner, fingerprint(request, rt))):
        raise TaskNotFound(f"No task '{task_id}' (unknown, or expired).", param="task_id")
    if keys is not None and isinstance(found, Job) and found.requires_key:
        key = keys.provider_key or keys.bearer
        if key and Owners.same(found.key_fp, rt.engine.owners.of(key)):  # only the key it started with
            rt.engine.resume(found, key, keys)
    return rt, found


async def get_task(request: Request) -> Response:
    _, found = await _find(request)
    return Response(encode(_view(found)), media_type="application/json")


async def cancel_task(request: Request) -> Response:
    rt, found = await _find(request, read=False)
    status = found.status
    if status in ("succeeded", "failed"):
        raise GatewayError(f"The task already {status}; there is nothing to cancel.", status=409,
                           code="task_not_cancellable")
    done = await rt.engine.cancel(found.id)
    return Response(encode(_view(done or found)), media_type="application/json")


def _progress_event(task_id: str, status: str, percent: int) -> bytes:
    return sse.event({"type": "image.task.progress", "task_id": task_id, "status": status, "progress": percent},
                     "image.task.progress")


async def task_events(request: Request) -> Response:
    rt, found = await _find(request)

    async def events() -> AsyncIterator[bytes]:
        job = found if isinstance(found, Job) and not found.terminal else None
        if job is not None:
            q = job.listen()
            try:
                yield _progress_event(job.id, job.status, job.progress)
                while not job.terminal:
                    item = await q.get()
                    if isinstance(item, Progress):
                        yield _progress_event(job.id, item.status, item.percent)
                    # else: the job ended, or an attempt failed and a retry follows (then keep watching)
            finally:
                job.unlisten(q)
        final: Job | TaskRecord | None = found
        if job is None and isinstance(found, TaskRecord) and rt.engine.fleet is not None \
                and found.status not in TERMINAL:
            async for ev in rt.engine.fleet.follow(found.id):  # polled by another process
                yield _progress_event(found.id, ev.status, ev.percent)
            final = await rt.engine.find(found.id)
        obj = _view(final or found)
        yield sse.event({"type": f"image.task.{obj['status']}", "task": obj}, f"image.task.{obj['status']}")
        yield sse.DONE

    keepalive = rt.cfg.sse_keepalive_s
    return StreamingResponse(sse.with_keepalive(events(), keepalive), media_type="text/event-stream",
                             headers=sse.HEADERS)


async def task(request: Request) -> Response:
    """One route for both methods, so a 405 on it lists both in `Allow`."""
    return await (cancel_task if request.method == "DELETE" else get_task)(request)


ROUTES = [
    Route("/v1/images/tasks/{task_id}", task, methods=["GET", "DELETE"]),
    Route("/v1/images/tasks/{task_id}/events", task_events, methods=["GET"]),
]
