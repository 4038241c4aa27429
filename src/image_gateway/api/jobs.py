"""Every Images API request as a job: the caller's async preference, its webhook, the detached run.

`Prefer: respond-async` (RFC 7240) or `"async": true` in the body → 202 with a task object at
once; the job runs on (its run phase in a background task, its polling in the engine's poller)
and is fetched with GET /v1/images/tasks/{id} (api/tasks.py). `webhook_url` in the body: the
finished task is POSTed there (any request whose job becomes a task).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..config import Route
from ..engine.jobs import CURRENT_JOB, Job, task_object
from ..engine.webhooks import valid_url
from ..errors import GatewayError, InvalidRequest, UpstreamError
from ..providers.base import ImageRequest, Pending, ProviderResult
from ..routing.keys import KeySource
from ..runtime import Runtime
from ..schemas.responses import encode
from .body import header

log = logging.getLogger("image_gateway.tasks")
_TRUE = {True, "true", "1", "yes", "on"}  # (1 == True)


def wants_async(request: Request, req: ImageRequest) -> bool:
    flag = req.extra.pop("async", None)  # ours: never forwarded upstream
    if isinstance(flag, str):
        flag = flag.strip().lower()
    elif flag is not None and not isinstance(flag, bool | int | float):  # {} or [] are unhashable
        raise InvalidRequest("'async' must be a boolean.", param="async", code="invalid_value")
    if flag in _TRUE:
        return True
    prefer = header(request, b"prefer")
    if not prefer:
        return False
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def begin(request: Request, rt: Runtime, route: Route, req: ImageRequest) -> Job:
    """The request's job (memory only until it becomes a task), bound to this request's context."""
    detached = wants_async(request, req)
    hook = req.extra.pop("webhook_url", None)
    delivery: dict[str, Any] = {
        "operation": req.operation, "response_format": req.response_format, "output_format": req.output_format,
        "output_compression": req.output_compression, "stream": req.stream and not detached,
    }
    job = rt.engine.new_job(req.model, route.name, delivery)
    job.base_url_fn = lambda: rt.cfg.public_base_url or str(request.base_url).rstrip("/")
    if hook is not None:
        if not isinstance(hook, str) or not valid_url(hook):
            raise InvalidRequest("'webhook_url' must be an http(s) URL.", param="webhook_url")
        job.webhook_url = hook
    job.detached = detached
    # Read by the engine when the provider hands back a Pending (engine/engine.py). Set, never reset:
    # each request runs in its own task, and the tasks it starts inherit this binding.
    CURRENT_JOB.set(job)
    return job


def current() -> Job | None:
    """This request's job (set by `begin`)."""
    return CURRENT_JOB.get()


def settle(rt: Runtime, exc: BaseException) -> None:
    """The request ended with `exc`. A task that was between attempts ends with it; a task the poller
    is still running (its caller went away) runs on."""
    job = CURRENT_JOB.get()
    if job is not None:
        rt.engine.settle(job, exc)


async def start(request: Request, rt: Runtime, route: Route, req: ImageRequest, keys: KeySource,
                job: Job) -> Response:
    """Answer 202 with the task; run the job in the background."""
    req.stream = False  # nobody to stream to
    await rt.engine.open_task(job)
    state = dict(request.scope["state"])
    job.runner = asyncio.create_task(run_detached(rt, route, req, keys, job, state), name=f"task-{job.id}")
    headers = {"Location": f"/v1/images/tasks/{job.id}", "X-Gateway-Task-Id": job.id,
               "Preference-Applied": "respond-async", "X-Gateway-Model": route.name,
               "X-Gateway-Provider": route.provider}
    return Response(encode(task_object(job.record())), status_code=202, media_type="application/json",
                    headers=headers)


async def run_detached(rt: Runtime, route: Route, req: ImageRequest, keys: KeySource, job: Job,
                       state: dict[str, Any]) -> None:
    """The run phase of a respond-async job: until the upstream accepts it (then the poller has it)
    or, for a synchronous provider, until its result."""
    engine = rt.engine
    try:
        async for ev in rt.router.events(route, req, keys, str(state.get("request_id", job.id)), state):
            if isinstance(ev, Pending):
                return
            if isinstance(ev, ProviderResult):
                await engine.complete(job, ev)
                return
        await engine.fail(job, UpstreamError("The provider ended without a result."))
    except GatewayError as e:
        await engine.fail(job, e)
    except asyncio.CancelledError:
        raise  # cancelled by DELETE (the job is already marked) or by shutdown (resumed as lost)
    except Exception:
        log.exception("task failed", extra={"task_id": job.id})
        await engine.fail(job, GatewayError("The gateway hit an internal error running this task.", status=500,
                                            type="server_error", code="internal_error"))
