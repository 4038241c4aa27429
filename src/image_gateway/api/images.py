"""POST /v1/images/generations, /edits, /variations: OpenAI's wire shapes, one code path.

The answer's form and where its URLs point: api/delivery.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..core.settings import Route
from ..core.types import ImageRequest, InputImage, Operation, Progress, ProviderResult, StreamEvent
from ..engine.jobs import Job
from ..errors import GatewayError, InvalidRequest
from ..media.egress import check_param, policy_for
from ..prompt import pipeline
from ..prompt.limits import prompt_too_long
from ..routing.keys import KeySource
from ..runtime import Runtime
from ..schemas.images import FIELDS, validate_params
from ..schemas.responses import encode, images_response
from . import jobs, sse
from .auth import authenticate
from .body import decode_json_object, is_multipart, read_body, read_form
from .delivery import answer_format, delivery_for, rehosts, served_rehost, upstream_format
from .errors import JSONBytes
from .idempotent import idempotency_key, idempotent

FIRST_EVENT_WAIT_S = 10.0  # longest a stream's headers wait for its first event
# Body fields that are ours (not forwarded as provider extras).
_OWN = FIELDS | {"images", "image", "mask"}


def build_request(rt: Runtime, op: Operation, raw: dict[str, Any], strict: bool) -> tuple[ImageRequest, Route]:
    """Validate once: route defaults fill what the caller left out, then every field is checked."""
    model = raw.get("model")
    if model is None or model == "":  # (not `or`: a falsy non-string such as {} is a 400, not the default)
        model = rt.cfg.default_model
    if not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", param="model")
    route = rt.router.resolve(model)
    for k, v in route.defaults.items():
        if k not in raw or raw[k] in (None, ""):
            raw[k] = v
    raw["model"] = model
    params = validate_params(raw, strict=strict)
    prompt = params.prompt
    if op != "variation":
        if not prompt or not prompt.strip():
            raise InvalidRequest("'prompt' is required and must not be empty.", param="prompt",
                                 code="missing_required_parameter")
        if len(prompt) > route.max_prompt_chars:  # before any work on it (ratio parsing, enhancement)
            raise prompt_too_long(route.name, route.max_prompt_chars, len(prompt))
    extra = {k: v for k, v in raw.items() if k not in _OWN}
    req = ImageRequest(
        operation=op, prompt=prompt or "", model=model, n=params.n, size=params.size, quality=params.quality,
        style=params.style, response_format=params.response_format, output_format=params.output_format,
        output_compression=params.output_compression, background=params.background, moderation=params.moderation,
        input_fidelity=params.input_fidelity, partial_images=params.partial_images, stream=params.stream,
        user=params.user, extra=extra,
    )
    return req, route


def _json_image(item: Any, param: str) -> InputImage:
    """`{"image_url": ...}` (or a bare URL string, as some relays send) → an InputImage."""
    url = item.get("image_url") if isinstance(item, dict) else item
    if isinstance(url, dict):  # chat-style {"image_url": {"url": ...}}
        url = url.get("url")
    if isinstance(item, dict) and item.get("file_id"):
        raise InvalidRequest("file_id references are not supported by this gateway; send image_url.", param=param)
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
        raise InvalidRequest(f"'{param}' must be an http(s) URL or a data URL.", param=param)
    return InputImage(url=url)


async def parse(request: Request, rt: Runtime, op: Operation) -> tuple[ImageRequest, Route]:
    limit = rt.cfg.max_body_bytes
    if op != "generate" and is_multipart(request):
        fields, files = await read_form(request, limit)
        req, route = build_request(rt, op, dict(fields), strict=False)
        req.images = files.get("image", [])
        masks = files.get("mask", [])
        req.mask = masks[0] if masks else None
    else:
        if op == "variation":
            raise InvalidRequest("Variations take multipart/form-data with an 'image' file.", param="image")
        raw = decode_json_object(await read_body(request, limit))
        images = raw.get("images", raw.get("image"))
        mask = raw.get("mask")
        req, route = build_request(rt, op, raw, strict=True)
        if op == "edit":
            items = images if isinstance(images, list) else [images] if images else []
            req.images = [_json_image(it, "images") for it in items]
            req.mask = _json_image(mask, "mask") if mask is not None else None
    if op != "generate" and not req.images:
        raise InvalidRequest("'image' is required: send at least one image file.", param="image",
                             code="missing_required_parameter")
    if len(req.images) > 16:
        raise InvalidRequest("At most 16 images may be sent.", param="image")
    if req.images or req.mask is not None or "webhook_url" in req.extra:  # (a plain generation skips this)
        await check_caller_urls(rt, req)
    return req, route


async def check_caller_urls(rt: Runtime, req: ImageRequest) -> None:
    """Every URL the caller supplied must reach a public address or an allowlisted one (media/egress.py)."""
    policy = policy_for(rt.cfg.private_url_allowlist)
    await check_param(policy, [i.url for i in req.images if i.url], "images")
    if req.mask is not None and req.mask.url:
        await check_param(policy, [req.mask.url], "mask")
    hook = req.extra.get("webhook_url")
    if isinstance(hook, str):  # (its type and shape: api/jobs.py)
        await check_param(policy, [hook], "webhook_url")


def _served(request: Request, route: Route) -> dict[str, str]:
    request.scope["state"]["route"] = route.name
    request.scope["state"]["provider"] = route.provider
    return {"X-Gateway-Model": route.name, "X-Gateway-Provider": route.provider}


def served_headers(state: dict[str, Any]) -> dict[str, str]:
    """Who actually served (the router records the route/deployment of the attempt that answered)."""
    headers = {"X-Gateway-Model": str(state["route"]), "X-Gateway-Provider": str(state["provider"])}
    if "deployment" in state:
        headers["X-Gateway-Deployment"] = str(state["deployment"])
    return headers


async def finish(request: Request | str, rt: Runtime, req: ImageRequest, result: ProviderResult,
                 fmt: str | None = None, rehost: bool = True) -> dict[str, Any]:
    """The ImagesResponse in form `fmt` (see answer_format; "native" = the form the upstream gave)."""
    if result.rendered is not None:  # an async task's result: the engine rendered it once, when it ended
        return result.rendered
    fmt = fmt or req.response_format or "both"
    if fmt == "native":
        fmt = "b64_json" if result.images[0].b64 is not None else "url"
    d = delivery_for(request, rt, req, result.meta, response_format=fmt, rehost=rehost)
    data = await rt.deliverer.all(result.images, d)
    meta = dict(result.meta)
    if d.output_format:
        meta["output_format"] = d.output_format
    meta.pop("provider_note", None)
    return images_response(data, result.usage, meta)


async def handle(request: Request, op: Operation, rt: Runtime | None = None) -> Response:
    """`rt` is bound by the hot-route table (app.py); Starlette's endpoints look it up."""
    rt = rt or request.app.state.rt
    keys = authenticate(request, rt.cfg)
    req, route = await parse(request, rt, op)
    # An Idempotency-Key makes a retried request answer from the first one (api/idempotent.py).
    key = idempotency_key(request, req)
    if key is not None:
        return await idempotent(request, rt, req, key, lambda: respond(request, rt, route, req, keys))
    return await respond(request, rt, route, req, keys)


async def respond(request: Request, rt: Runtime, route: Route, req: ImageRequest, keys: KeySource) -> Response:
    _served(request, route)
    # Ratio from the prompt and LLM enhancement, when the request or route asks (`enhance`, `parse_ratio`).
    plan = await pipeline.for_route(rt, route, req, enhance_default=False, parse_default=False)
    fmt = answer_format(rt.cfg, route, req)
    rehost = rehosts(rt.cfg, route)
    job = jobs.begin(request, rt, route, req)  # every request is a job; some become tasks (api/jobs.py)
    job.delivery["response_format"] = fmt
    if not rehost:
        job.delivery["rehost"] = False
    req.response_format = "b64_json" if req.stream else upstream_format(fmt, rehost)
    if job.detached:
        return await jobs.start(request, rt, route, req, keys, job)
    if req.stream:
        return await stream_response(request, rt, route, req, keys, job)
    state = request.scope["state"]
    try:
        result = await rt.router.result(route, req, keys, state["request_id"], state, job)
    except BaseException as e:
        jobs.settle(rt, job, e)
        raise
    headers = served_headers(state)
    if job.persistent:
        headers["X-Gateway-Task-Id"] = job.id
    size = result.meta.get("size")
    if size:  # what the upstream was sent or made, after fitting the request to what it takes
        headers["X-Gateway-Size"] = str(size)
    if plan is not None:
        plan.annotate(result)
    body = await finish(request, rt, req, result, fmt, served_rehost(rt, state, route))
    return JSONBytes(encode(body), 200, headers)


async def stream_response(request: Request, rt: Runtime, route: Route, req: ImageRequest,
                          keys: KeySource, job: Job) -> Response:
    """Headers go out with the first event (up to FIRST_EVENT_WAIT_S), so they can name the route
    that actually served: the router may fall back until that first event."""
    source = stream_events(request, rt, route, req, keys, job)
    first = asyncio.ensure_future(anext(source))
    await asyncio.wait({first}, timeout=FIRST_EVENT_WAIT_S)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield await first
        except StopAsyncIteration:
            return
        async for chunk in source:
            yield chunk

    return StreamingResponse(sse.with_keepalive(body(), rt.cfg.sse_keepalive_s), media_type="text/event-stream",
                             headers={**sse.HEADERS, **served_headers(request.scope["state"])})


async def stream_events(request: Request, rt: Runtime, route: Route, req: ImageRequest,
                        keys: KeySource, job: Job) -> AsyncIterator[bytes]:
    """OpenAI's image SSE for any provider: partial images, completed images, then [DONE]."""
    prefix = "image_edit" if req.operation == "edit" else "image_generation"
    partials_left = req.partial_images or 0
    partial_index = 0
    try:
        state = request.scope["state"]
        announced = False
        async for ev in rt.router.events(route, req, keys, state["request_id"], state, job):
            if not announced and job.persistent:
                announced = True  # it became a task: name it, so a caller who drops can fetch it later
                yield f": task {job.id}\n\n".encode()
            if isinstance(ev, StreamEvent):
                yield sse.event(ev.data, str(ev.data.get("type") or ""))
            elif isinstance(ev, Progress):
                if ev.preview is not None and partials_left > 0:
                    d = delivery_for(request, rt, req, {}, stream=True)
                    img = await rt.deliverer.one(ev.preview, d)
                    partials_left -= 1
                    yield sse.event({"type": f"{prefix}.partial_image", "b64_json": img["b64_json"],
                                     "partial_image_index": partial_index, "progress": ev.percent},
                                    f"{prefix}.partial_image")
                    partial_index += 1
                else:
                    yield f": progress {ev.percent}%\n\n".encode()
            elif isinstance(ev, ProviderResult) and not ev.streamed:
                meta = ev.meta
                if ev.rendered is not None:  # an async task's result, already rendered as b64_json
                    data, meta = ev.rendered["data"], ev.rendered
                    fmt = ev.rendered.get("output_format") or req.output_format or "png"
                else:
                    d = delivery_for(request, rt, req, ev.meta, stream=True)
                    data = await rt.deliverer.all(ev.images, d)
                    fmt = d.output_format or ev.meta.get("output_format") or req.output_format or "png"
                for item in data:
                    payload: dict[str, Any] = {"type": f"{prefix}.completed", "b64_json": item["b64_json"],
                                               "output_format": fmt}
                    for k in ("background", "quality", "size"):
                        if k in meta:
                            payload[k] = meta[k]
                    if ev.usage:
                        payload["usage"] = ev.usage
                    yield sse.event(payload, f"{prefix}.completed")
        yield sse.DONE
    except GatewayError as e:
        jobs.settle(rt, job, e)
        yield sse.error_event(e)
    except BaseException as e:
        jobs.settle(rt, job, e)
        raise


async def generations(request: Request) -> Response:
    return await handle(request, "generate")


async def edits(request: Request) -> Response:
    return await handle(request, "edit")


async def variations(request: Request) -> Response:
    return await handle(request, "variation")
