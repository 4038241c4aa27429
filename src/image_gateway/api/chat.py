"""POST /v1/chat/completions: any image route, used from a chat client.

The prompt is the last user message (a string, or its text parts). On edit-capable routes its
image_url parts become the edit's images; without any, the images of the latest earlier message
that has some (an assistant answer's Markdown images or OpenRouter `images`, or a user's image
parts) do, so "make it blue" edits the picture before it. The gateway's own earlier images are
read from its store; any other URL goes through the egress policy (media/egress.py). The answer is
one assistant message in Markdown: the image(s), then how the prompt was handled, the ratio and
the resolution, as the seed gateway (z-image-api) does, and OpenRouter's `images: [{type:
"image_url", image_url: {url}}]` beside it (hosted URLs: never a data URI, which would overflow
clients' 128 KiB SSE line limits). `modalities` and `image_config` ({aspect_ratio, image_size})
are accepted as OpenRouter sends them.

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
from ..media.convert import CONTENT_TYPES
from ..media.egress import check_param, policy_for
from ..media.store import read_hosted
from ..prompt import pipeline
from ..prompt.pipeline import PromptPlan
from ..prompt.ratio import RATIOS, nearest_ratio
from ..routing.keys import KeySource
from ..runtime import Runtime
from ..schemas.chat import IMAGE_FIELDS, ChatRequest, earlier_images, last_user_message, parse_chat, split_content
from ..schemas.responses import encode
from . import sse
from .auth import authenticate
from .body import decode_json_object, read_body
from .chat_format import Chunks, completion, image_parts, labels, markdown, usage_of
from .delivery import base_url, delivery_for, rehosts, served_rehost, upstream_format
from .images import build_request, served_headers

log = logging.getLogger("image_gateway.chat")
MAX_REFERENCE_IMAGES = 16


@dataclasses.dataclass(slots=True)
class ChatJob:
    route: Route
    req: ImageRequest
    model: str  # as the caller named it, echoed in the answer
    notes: list[str]
    ratio: str | None = None  # image_config.aspect_ratio, as the provider was given it


def _prompt_and_refs(chat: ChatRequest) -> tuple[str, list[str]]:
    msg = last_user_message(chat)
    text, urls = split_content(msg) if msg is not None else ("", [])
    if chat.prompt and chat.prompt.strip():
        text = chat.prompt.strip()
    if not text:
        raise InvalidRequest("A prompt is required: send it as the last user message.", param="messages",
                             code="missing_required_parameter")
    return text, urls


def _ratio(chat: ChatRequest) -> str | None:
    """image_config.aspect_ratio ("16:9") as one of the ratios the providers know (the nearest)."""
    raw = chat.image_config.aspect_ratio if chat.image_config else None
    if raw is None:
        return None
    w, _, h = raw.replace("：", ":").partition(":")  # (its shape, "W:H", is checked by schemas/chat.py)
    ratio = f"{int(w)}:{int(h)}"
    return ratio if ratio in RATIOS else nearest_ratio(int(w), int(h))


def build_job(rt: Runtime, raw: dict[str, Any], chat: ChatRequest) -> ChatJob:
    model = chat.model or rt.cfg.default_model
    route = rt.router.resolve(model)  # 404 model_not_found for a chat model that is not an image route
    prompt, urls = _prompt_and_refs(chat)
    provider = rt.router.provider_of(route)
    edits = provider.capabilities.edits
    notes: list[str] = []
    if urls and not edits:
        notes.append(f"{len(urls)} reference image(s) ignored: {route.name} only generates from text.")
    refs = (urls or earlier_images(chat)) if edits else []  # "make it blue": the picture before it
    image_raw: dict[str, Any] = {k: raw[k] for k in IMAGE_FIELDS if raw.get(k) is not None}
    image_raw.update(model=model, prompt=prompt)
    if chat.n:
        image_raw["n"] = chat.n
    if chat.image_config and chat.image_config.image_size and "image_size" not in image_raw:
        image_raw["image_size"] = chat.image_config.image_size
    ratio = _ratio(chat)
    req, route = build_request(rt, "edit" if refs else "generate", image_raw, strict=True)
    if ratio is not None and not pipeline.explicit_size(req):
        pipeline.apply_ratio(req, provider, route.upstream_model, ratio)  # fixed: neither prompt nor LLM choose
    else:
        ratio = None
    if refs:
        if len(refs) > MAX_REFERENCE_IMAGES:
            raise InvalidRequest(f"At most {MAX_REFERENCE_IMAGES} images may be sent.", param="messages")
        for u in refs:
            if not u.startswith(("http://", "https://", "data:")):
                raise InvalidRequest("image_url must be an http(s) URL or a data URL.", param="messages")
        req.images = [InputImage(url=u) for u in refs]
    return ChatJob(route, req, model, notes, ratio)


async def _own_images(request: Request, rt: Runtime, job: ChatJob) -> None:
    """Images the gateway hosts itself are read from its store, not fetched over HTTP (an earlier
    answer's URL). One that has expired is dropped; with none left, the job generates instead."""
    bases = {f"{b}/images/" for b in (rt.cfg.public_base_url, base_url(rt, request)) if b}
    if rt.store.public_base:
        bases.add(f"{rt.store.public_base}/")
    kept: list[InputImage] = []
    for img in job.req.images:
        prefix = next((b for b in bases if img.url and img.url.startswith(b)), None)
        if prefix is None or img.url is None:
            kept.append(img)
            continue
        name = img.url[len(prefix):].split("?", 1)[0]
        data = await read_hosted(rt.store, name)
        if data is None:
            continue
        ctype = CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "image/png")
        kept.append(InputImage(data=data, filename=name, content_type=ctype))
    if len(kept) < len(job.req.images):
        job.notes.append("An earlier image has expired on this gateway and was left out.")
    job.req.images = kept
    if not kept and job.req.operation == "edit":
        job.req.operation = "generate"


async def _plan(rt: Runtime, job: ChatJob, chat: ChatRequest) -> PromptPlan:
    if chat.enhance is not None:
        job.req.extra["enhance"] = chat.enhance
    plan = await pipeline.for_route(rt, job.route, job.req, enhance_default=True, parse_default=True)
    assert plan is not None  # parse_default=True: the chat surface always runs the pipeline
    if job.ratio is not None:
        plan.ratio, plan.ratio_source = job.ratio, "request"
    return plan


async def _answer(request: Request, rt: Runtime, job: ChatJob, plan: PromptPlan,
                  result: ProviderResult) -> tuple[str, list[str]]:
    """(the Markdown message, the hosted image URLs)."""
    rehost = served_rehost(rt, request.scope["state"], job.route)
    d = delivery_for(request, rt, job.req, result.meta, response_format="url", rehost=rehost)
    data = await rt.deliverer.all(result.images, d)
    ratio, resolution = labels(job.req, result, plan)
    urls = [str(item["url"]) for item in data]
    return markdown(urls, plan.prompt, plan, ratio, resolution, job.notes), urls


async def completions(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    keys = authenticate(request, rt.cfg)
    raw = decode_json_object(await read_body(request, rt.cfg.max_body_bytes))
    chat = parse_chat(raw)
    job = build_job(rt, raw, chat)
    if job.req.images:
        await _own_images(request, rt, job)
    if job.req.images:  # any other image URL must reach a public or allowlisted address (media/egress.py)
        await check_param(policy_for(rt.cfg.private_url_allowlist), [i.url for i in job.req.images if i.url],
                          "messages")
    # The answer is a URL: base64 from an upstream that takes response_format saves downloading it.
    job.req.response_format = upstream_format("url", rehosts(rt.cfg, job.route))
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
    content, urls = await _answer(request, rt, job, plan, result)
    return Response(encode(completion(cid, created, job.model, content, usage_of(result), urls)),
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
        content, urls = await _answer(request, rt, job, plan, result)
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
    yield sse.data_only(chunks.delta({"content": content, "images": image_parts(urls)}))
    yield sse.data_only(chunks.delta({}, finish="stop"))
    if chunks.include_usage:
        yield sse.data_only(chunks.usage(usage_of(result)))
    yield sse.DONE

