"""POST /v1/chat/completions: any image route, used from a chat client.

The prompt is the last user message (a string, or its text parts; image_url parts become reference
images on edit-capable routes). The answer is one assistant message in Markdown: the image(s), then
how the prompt was handled, the ratio and the resolution, as the seed gateway (z-image-api) does.

Streaming: a role chunk at once, then SSE comments as keep-alive while the job runs, the Markdown,
a finish chunk, an optional usage chunk, `data: [DONE]`. Progress (prompt enhancement, upstream
percentages) is sent as `delta.reasoning_content`: clients that know the field (Cherry Studio,
LobeChat, Open WebUI...) show it as a collapsible "thinking" block; clients that don't ignore it;
either way it never becomes part of the message content that the client stores and sends back in
the next turn, so the conversation history holds only the clean Markdown answer.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..core.settings import Route
from ..core.types import ImageRequest, InputImage, Progress, ProviderResult
from ..errors import GatewayError, InvalidRequest
from ..media.egress import check_param, policy_for
from ..prompt import pipeline
from ..prompt.pipeline import PromptPlan
from ..routing.keys import KeySource
from ..runtime import Runtime
from ..schemas.chat import IMAGE_FIELDS, ChatRequest, last_user_message, parse_chat, split_content
from ..schemas.responses import encode
from . import sse
from .auth import authenticate
from .body import decode_json_object, read_body
from .chat_format import Chunks, completion, labels, markdown, usage_of
from .images import build_request, delivery_for, served_headers

log = logging.getLogger("image_gateway.chat")
MAX_REFERENCE_IMAGES = 16


@dataclasses.dataclass(slots=True)
class ChatJob:
    route: Route
    req: ImageRequest
    model: str  # as the caller named it, echoed in the answer
    notes: list[str]


def _prompt_and_refs(chat: ChatRequest) -> tuple[str, list[str]]:
    msg = last_user_message(chat)
    text, urls = split_content(msg) if msg is not None else ("", [])
    if chat.prompt and chat.prompt.strip():
        text = chat.prompt.strip()
    if not text:
        raise InvalidRequest("A prompt is required: send it as the last user message.", param="messages",
                             code="missing_required_parameter")
    return text, urls


def build_job(rt: Runtime, raw: dict[str, Any], chat: ChatRequest) -> ChatJob:
    model = chat.model or rt.cfg.default_model
    route = rt.router.resolve(model)  # 404 model_not_found for a chat model that is not an image route
    prompt, urls = _prompt_and_refs(chat)
    edits = rt.router.provider_of(route).capabilities.edits
    notes: list[str] = []
    if urls and not edits:
        notes.append(f"{len(urls)} reference image(s) ignored: {route.name} only generates from text.")
    image_raw: dict[str, Any] = {k: raw[k] for k in IMAGE_FIELDS if raw.get(k) is not None}
    image_raw.update(model=model, prompt=prompt)
    if chat.n:
        image_raw["n"] = chat.n
    req, route = build_request(rt, "edit" if urls and edits else "generate", image_raw, strict=True)
    if urls and edits:
        if len(urls) > MAX_REFERENCE_IMAGES:
            raise InvalidRequest(f"At most {MAX_REFERENCE_IMAGES} images may be sent.", param="messages")
        for u in urls:
            if not u.startswith(("http://", "https://", "data:")):
                raise InvalidRequest("image_url must be an http(s) URL or a data URL.", param="messages")
        req.images = [InputImage(url=u) for u in urls]
    return ChatJob(route, req, model, notes)


async def _plan(rt: Runtime, job: ChatJob, chat: ChatRequest) -> PromptPlan:
    if chat.enhance is not None:
        job.req.extra["enhance"] = chat.enhance
    plan = await pipeline.for_route(rt, job.route, job.req, enhance_default=True, parse_default=True)
    assert plan is not None  # parse_default=True: the chat surface always runs the pipeline
    return plan


async def _answer(request: Request, rt: Runtime, job: ChatJob, plan: PromptPlan, result: ProviderResult) -> str:
    d = dataclasses.replace(delivery_for(request, rt, job.req, result.meta), response_format="url")
    data = await rt.deliverer.all(result.images, d)
    ratio, resolution = labels(job.req, result, plan)
    return markdown([str(item["url"]) for item in data], plan.prompt, plan, ratio, resolution, job.notes)


async def completions(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    keys = authenticate(request, rt.cfg)
    raw = decode_json_object(await read_body(request, rt.cfg.max_body_bytes))
    chat = parse_chat(raw)
    job = build_job(rt, raw, chat)
    if job.req.images:  # image_url parts: each must reach a public or allowlisted address (media/egress.py)
        await check_param(policy_for(rt.cfg.private_url_allowlist), [i.url for i in job.req.images if i.url],
                          "messages")
    request.scope["state"]["route"] = job.route.name
    request.scope["state"]["provider"] = job.route.provider
    headers = {"X-Gateway-Model": job.route.name, "X-Gateway-Provider": job.route.provider}
    cid, created = f"chatcmpl-{os.urandom(12).hex()}", int(time.time())
    if chat.stream:
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        chunks = Chunks(cid, created, job.model, include_usage)
        body = sse.with_keepalive(_stream(request, rt, job, chat, keys, chunks), rt.cfg.sse_keepalive_s)
        return StreamingResponse(body, media_type="text/event-stream", headers={**sse.HEADERS, **headers})
    plan = await _plan(rt, job, chat)
    result = await _result(request, rt, job, keys)
    plan.annotate(result)
    content = await _answer(request, rt, job, plan, result)
    return Response(encode(completion(cid, created, job.model, content, usage_of(result))),
                    media_type="application/json", headers=served_headers(request.scope["state"]))


async def _result(request: Request, rt: Runtime, job: ChatJob, keys: KeySource) -> ProviderResult:
    state = request.scope["state"]
    return await rt.router.result(job.route, job.req, keys, state["request_id"], state)


async def _stream(request: Request, rt: Runtime, job: ChatJob, chat: ChatRequest, keys: KeySource,
                  chunks: Chunks) -> AsyncIterator[bytes]:
    def think(text: str) -> bytes:
        return sse.data_only(chunks.delta({"reasoning_content": text}))

    yield sse.data_only(chunks.delta({"role": "assistant", "content": ""}))
    try:
        if pipeline.will_enhance(job.req.prompt, rt.cfg.enhance,
                                 pipeline.enhance_wanted(chat.enhance, job.route.options, True)):
            yield think("✨ Enhancing the prompt…\n")
        plan = await _plan(rt, job, chat)
        if plan.enhancement == "enhanced":
            yield think(f"✨ Enhanced prompt: {plan.prompt}\n")
        elif plan.enhancement == "failed":
            yield think(f"⚠️ Enhancement failed ({plan.reason}); using the original prompt.\n")
        yield think(f"🎨 Generating with {job.route.name}…\n")
        result: ProviderResult | None = None
        shown = -1
        state = request.scope["state"]
        async for ev in rt.router.events(job.route, job.req, keys, state["request_id"], state):
            if isinstance(ev, Progress) and ev.percent > shown:
                shown = ev.percent
                yield think(f"⏳ {ev.percent}%\n")
            elif isinstance(ev, ProviderResult):
                result = ev
        if result is None:
            raise GatewayError("The provider ended without a result.", status=502, type="upstream_error")
        plan.annotate(result)
        content = await _answer(request, rt, job, plan, result)
    except GatewayError as e:
        yield sse.data_only(e.body())
        yield sse.DONE
        return
    except Exception:
        log.exception("chat stream failed", extra={"request_id": request.scope["state"].get("request_id")})
        err = GatewayError("The gateway hit an internal error; it has been logged with this request's id.",
                           status=500, type="server_error", code="internal_error")
        yield sse.data_only(err.body())
        yield sse.DONE
        return
    yield sse.data_only(chunks.delta({"content": content}))
    yield sse.data_only(chunks.delta({}, finish="stop"))
    if chunks.include_usage:
        yield sse.data_only(chunks.usage(usage_of(result)))
    yield sse.DONE

