"""Every Images API request as a job: the caller's async preference, its webhook, the detached run.

`Prefer: respond-async` (RFC 7240) or `"async": true` in the body → 202 with a task object at
once; the job runs on (its run phase in a background task, its polling in the engine's poller)
and is fetched with GET /v1/images/tasks/{id} (api/tasks.py). `webhook_url` in the body: the
finished task is POSTed there (any request whose job becomes a task).

A task belongs to its creator (api/owner.py): its owner's fingerprint is worked out the first time
the job is recorded, so a plain request never pays for it. A 202 is answered only once the task,
its validated request (no key) and its input images are stored: a restart submits it then if it
was never sent (`resubmit`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..core.settings import Route, truthy
from ..core.types import ImageRequest, InputImage, Pending, ProviderResult
from ..engine.jobs import Job
from ..engine.webhooks import valid_url
from ..errors import GatewayError, InvalidRequest, UpstreamError
from ..routing.keys import KeySource
from ..runtime import Runtime
from ..schemas.responses import encode
from .body import header
from .owner import fingerprint
from .task_view import task_object

log = logging.getLogger("image_gateway.tasks")


def wants_async(request: Request, req: ImageRequest) -> bool:
    flag = req.extra.pop("async", None)  # ours: never forwarded upstream
    if flag is not None and not isinstance(flag, str | bool | int | float):
        raise InvalidRequest("'async' must be a boolean.", param="async", code="invalid_value")
    if truthy(flag) is True:
        return True
    prefer = header(request, b"prefer")
    if not prefer:
        return False
    return any(p.split(";")[0].strip().lower() == "respond-async" for p in prefer.split(","))


def begin(request: Request, rt: Runtime, route: Route, req: ImageRequest) -> Job:
    """The request's job (memory only until it becomes a task), handed to the router with the request."""
    detached = wants_async(request, req)
    hook = req.extra.pop("webhook_url", None)
    delivery: dict[str, Any] = {
        "operation": req.operation, "response_format": req.response_format, "output_format": req.output_format,
        "output_compression": req.output_compression, "stream": req.stream and not detached,
    }
    job = rt.engine.new_job(req.model, route.name, delivery)
    job.task_fn = lambda j: _as_task(j, request, rt)
    if hook is not None:
        if not isinstance(hook, str) or not valid_url(hook):
            raise InvalidRequest("'webhook_url' must be an http(s) URL.", param="webhook_url")
        job.webhook_url = hook
    job.detached = detached
    return job


def _as_task(job: Job, request: Request, rt: Runtime) -> None:
    """What a job needs once it is a task: the base URL of its images, and who owns it."""
    job.delivery["base_url"] = rt.cfg.public_base_url or str(request.base_url).rstrip("/")
    job.owner = fingerprint(request, rt)


def settle(rt: Runtime, job: Job, exc: BaseException) -> None:
    """The request ended with `exc`. A task that was between attempts ends with it; a task the poller
    is still running (its caller went away) runs on."""
    rt.engine.settle(job, exc)


async def start(request: Request, rt: Runtime, route: Route, req: ImageRequest, keys: KeySource,
                job: Job) -> Response:
    """Answer 202 with the task (stored, with what a restart needs to submit it); run it in the background."""
    req.stream = False  # nobody to stream to
    job.request, inputs = task_spec(req)
    job.submit = "waiting"
    job.key_source, key = _caller_key(rt, route, keys)
    if key is not None:
        job.key_fp = rt.engine.owners.of(key)
    job.deadline_at = time.time() + rt.router.deadline_s(route)
    await rt.engine.open_task(job, inputs)
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
        async for ev in rt.router.events(route, req, keys, str(state.get("request_id", job.id)), state, job):
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


def _caller_key(rt: Runtime, route: Route, keys: KeySource) -> tuple[str, str | None]:
    """Whether the task will run on the caller's own key ("request", and that key) or the gateway's.
    (As the router picks: X-Provider-Key wins, a bearer token counts only where no key is configured.)"""
    own = keys.provider_key or keys.bearer
    if own is None:
        return "configured", None
    deps = rt.router.pool.deployments(route)
    configured = deps[0].endpoint.settings.api_key if deps else None
    return ("request", own) if keys.provider_key or configured is None else ("configured", None)


# -- a task's request, stored -----------------------------------------------------------------------

_IMAGE_FIELDS = ("images", "mask")


def task_spec(req: ImageRequest) -> tuple[dict[str, Any], list[bytes]]:
    """The validated request as JSON for the task record; its input images' bytes apart (engine/inputs.py)."""
    blobs: list[bytes] = []

    def image(img: InputImage) -> dict[str, Any]:
        out: dict[str, Any] = {"filename": img.filename, "content_type": img.content_type}
        if img.data is not None:
            out["blob"] = len(blobs)
            blobs.append(img.data)
        elif img.url and img.url.startswith("data:"):  # can be megabytes: kept out of the record too
            out["blob"], out["data_url"] = len(blobs), True
            blobs.append(img.url.encode())
        else:
            out["url"] = img.url
        return out

    spec: dict[str, Any] = {f.name: getattr(req, f.name) for f in dataclasses.fields(req)
                            if f.name not in _IMAGE_FIELDS}
    spec["extra"] = dict(req.extra)
    spec["images"] = [image(i) for i in req.images]
    spec["mask"] = image(req.mask) if req.mask is not None else None
    spec["blobs"] = len(blobs)
    return spec, blobs


async def request_of(rt: Runtime, job: Job) -> ImageRequest:
    """The stored request of a task again, input images read back."""
    spec = dict(job.request or {})
    count = int(spec.pop("blobs", 0))
    blobs = await rt.engine.inputs.get(job.id, count) if count else []

    def image(d: dict[str, Any]) -> InputImage:
        if "blob" in d:
            data = blobs[int(d["blob"])]
            if d.get("data_url"):
                return InputImage(url=data.decode(), filename=d["filename"], content_type=d["content_type"])
            return InputImage(data=data, filename=d["filename"], content_type=d["content_type"])
        return InputImage(url=d.get("url"), filename=d["filename"], content_type=d["content_type"])

    images = [image(d) for d in spec.pop("images", [])]
    mask = spec.pop("mask", None)
    return ImageRequest(**spec, images=images, mask=image(mask) if mask else None)


def resubmit(rt: Runtime, job: Job, keys: KeySource | None) -> None:
    """Run a stored task that was never sent upstream (after a restart; `keys`: its owner's, or None for
    the configured ones). The engine's TaskHost.submit (api/tasks.py)."""
    job.detached = True
    job.runner = asyncio.create_task(_resubmit(rt, job, keys or KeySource()), name=f"task-{job.id}")


async def _resubmit(rt: Runtime, job: Job, keys: KeySource) -> None:
    try:
        req = await request_of(rt, job)
        route = rt.router.resolve(job.route)
    except GatewayError as e:
        await rt.engine.fail(job, e)
        return
    except Exception:
        log.exception("a stored task could not be read back", extra={"task_id": job.id})
        await rt.engine.fail(job, GatewayError("The gateway could not read this task back after a restart.",
                                               status=500, type="server_error", code="internal_error"))
        return
    await run_detached(rt, route, req, keys, job, {"request_id": job.id})
