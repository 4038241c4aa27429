"""OpenAI Images API (and any OpenAI-compatible images upstream): generations, edits, variations.

Synchronous upstream: one request, one answer; with `stream: true` the upstream's SSE events
are relayed one by one as they arrive.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec

from ..core.types import (
    CallContext,
    GeneratedImage,
    ImageRequest,
    ProviderEvent,
    ProviderResult,
    StreamEvent,
)
from ..errors import GatewayError, UpstreamError
from .base import Capabilities, RouteSpec, StreamingProvider, SyncProvider
from .http import HttpProvider, connection_error, error_from_openai_body
from .references import caller_bytes

# Documented parameters per endpoint (docs/protocols.md §1.1-1.3); everything else stays with us.
_COMMON = ("n", "size", "response_format", "user")
_GENERATE = (*_COMMON, "quality", "style", "background", "moderation", "output_compression", "output_format",
             "partial_images", "stream")
_EDIT = (*_COMMON, "quality", "background", "output_compression", "output_format", "partial_images", "stream",
         "input_fidelity", "moderation")
_VARIATION = _COMMON
_JSON = {"Content-Type": "application/json"}
_PATHS = {"generate": "/images/generations", "edit": "/images/edits", "variation": "/images/variations"}


def _routes() -> tuple[RouteSpec, ...]:
    names = ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "dall-e-3", "dall-e-2")
    return tuple(RouteSpec(n, n, description=f"OpenAI {n}") for n in names)


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    passthrough_extra: bool = False  # send unknown body fields upstream too


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Whether the upstream model takes response_format / output_format (None: by model name).
    native_response_format: bool | None = None
    native_output_format: bool | None = None


# Sizes OpenAI's image models accept (protocols.md §1.1), by upstream model prefix; the prompt
# pipeline picks the nearest to a ratio. Unknown models get the GPT-image sizes.
SIZES: dict[str, tuple[str, ...]] = {
    "dall-e-2": ("1024x1024",),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536"),
    "": ("1024x1024", "1536x1024", "1024x1536"),
}


def _native(model: str, o: RouteOptions) -> tuple[bool, bool]:
    """(takes response_format, takes output_format) for the upstream model; route options override.

    GPT-image models always answer base64 and reject response_format; DALL·E models take
    response_format but not output_format. The gateway does the other half itself.
    """
    rf, of = o.native_response_format, o.native_output_format
    return (not model.startswith(("gpt-image", "chatgpt-image")) if rf is None else rf,
            not model.startswith("dall-e") if of is None else of)


@functools.cache
def _forwarded(operation: str, native_rf: bool, native_of: bool) -> tuple[str, ...]:
    """The request fields sent upstream for this endpoint, less those the model does not take."""
    names = {"generate": _GENERATE, "edit": _EDIT, "variation": _VARIATION}[operation]
    skip = set() if native_rf else {"response_format"}
    if not native_of:
        skip.update(("output_format", "output_compression"))
    return tuple(n for n in names if n not in skip)


class OpenAIProvider(HttpProvider, SyncProvider, StreamingProvider):
    name: ClassVar[str] = "openai"
    env_prefix: ClassVar[str] = "OPENAI"
    default_base_url: ClassVar[str] = "https://api.openai.com/v1"
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, variations=True, masks=True, native_stream=True,
                                                        sizes=SIZES)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions

    # Hooks for an OpenAI-shaped upstream at other addresses (providers/azure.py): the URL, the auth
    # header, the model named in the body, the model whose quirks apply, and error answers.
    def url_for(self, req: ImageRequest, ctx: CallContext) -> str:
        return self.base_url + _PATHS[req.operation]

    def auth_headers(self, ctx: CallContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {ctx.api_key}"} if ctx.api_key else {}

    def body_model(self, ctx: CallContext) -> str | None:
        return ctx.upstream_model

    def model_family(self, ctx: CallContext) -> str:
        return ctx.upstream_model

    def upstream_error(self, status: int, body: bytes, headers: Any, ctx: CallContext) -> GatewayError:
        return error_from_openai_body(status, body, headers, self.label or self.name, [ctx.api_key])

    def _params(self, req: ImageRequest, ctx: CallContext) -> dict[str, Any]:
        o: RouteOptions = self.route_options(ctx)
        model = self.body_model(ctx)
        params: dict[str, Any] = {"model": model} if model else {}
        if req.operation != "variation":
            params["prompt"] = req.prompt
        for n in _forwarded(req.operation, *_native(self.model_family(ctx), o)):
            v = getattr(req, n)
            if v is not None and not (n == "stream" and v is False):
                params[n] = v
        if o.passthrough_extra:
            params.update(req.extra)
        return params

    async def _request(self, req: ImageRequest, ctx: CallContext) -> tuple[str, dict[str, Any]]:
        url = self.url_for(req, ctx)
        auth = self.auth_headers(ctx)
        params = self._params(req, ctx)
        if req.operation == "generate":
            return url, {"data": msgspec.json.encode(params), "headers": {**auth, **_JSON}}
        if req.operation == "edit" and req.images and all(i.data is None for i in req.images) and (
                req.mask is None or req.mask.data is None):
            params["images"] = [{"image_url": i.url} for i in req.images]
            if req.mask is not None:
                params["mask"] = {"image_url": req.mask.url}
            return url, {"data": msgspec.json.encode(params), "headers": {**auth, **_JSON}}
        return url, {"data": await self._form(req, params, ctx), "headers": auth}

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        """A request that is not streamed: one call, one answer (the engine's fast path)."""
        url, kwargs = await self._request(req, ctx)
        answer = await self.call(url, ctx, data=kwargs["data"], headers=kwargs["headers"])
        if answer.status >= 400:
            raise self.upstream_error(answer.status, answer.body, answer.headers, ctx)
        return parse_images_response(answer.body)

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        if not req.stream:
            yield await self.generate(req, ctx)
            return
        url, kwargs = await self._request(req, ctx)
        try:
            async with self.session.post(url, **kwargs) as resp:
                if resp.status >= 400:
                    raise self.upstream_error(resp.status, await resp.read(), resp.headers, ctx)
                if resp.content_type != "text/event-stream":
                    body = await resp.read()
                    yield parse_images_response(body)
                    return
                final: list[GeneratedImage] = []
                usage = None
                data: dict[str, Any] = {}
                async for data in _sse(resp):
                    if "error" in data:
                        err = data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
                        raise GatewayError(str(err.get("message") or "upstream stream error"), status=502,
                                           type=str(err.get("type") or "upstream_error"), code=err.get("code"))
                    yield StreamEvent(data)
                    if str(data.get("type", "")).endswith(".completed") and data.get("b64_json"):
                        final.append(GeneratedImage(b64=data["b64_json"]))
                        usage = data.get("usage") or usage
                if not final:
                    raise UpstreamError("upstream stream ended without a completed image")
                keys = ("background", "output_format", "quality", "size")
                meta: dict[str, Any] = {k: data[k] for k in keys if k in data}
                yield ProviderResult(final, usage=usage, meta=meta, streamed=True)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, self.name) from None

    async def _form(self, req: ImageRequest, params: dict[str, Any], ctx: CallContext) -> aiohttp.FormData:
        form = aiohttp.FormData()
        for k, v in params.items():
            form.add_field(k, _form_value(v))
        many = len(req.images) > 1
        for img in req.images:
            form.add_field("image[]" if many else "image", await caller_bytes(img, ctx, "image"), filename=img.filename,
                           content_type=img.content_type)
        if req.mask is not None:
            form.add_field("mask", await caller_bytes(req.mask, ctx, "mask"), filename=req.mask.filename,
                           content_type=req.mask.content_type)
        return form


def _form_value(v: Any) -> str:
    # The SDK's own encoding: booleans as true/false, numbers via str().
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def parse_images_response(body: bytes) -> ProviderResult:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise UpstreamError("upstream returned a body that is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise UpstreamError("upstream answer has no image data")
    images = [
        GeneratedImage(b64=d.get("b64_json"), url=d.get("url"), revised_prompt=d.get("revised_prompt"))
        for d in data["data"]
        if isinstance(d, dict) and (d.get("b64_json") or d.get("url"))
    ]
    if not images:
        raise UpstreamError("upstream answer has no image data")
    meta = {k: data[k] for k in ("background", "output_format", "quality", "size") if k in data}
    return ProviderResult(images, usage=data.get("usage"), meta=meta)


async def _sse(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Decode an SSE body event by event as bytes arrive (not buffered to the end)."""
    data_lines: list[bytes] = []
    async for raw in resp.content:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data_lines:
                payload = b"\n".join(data_lines)
                data_lines = []
                if payload.startswith(b"[DONE]"):
                    return
                try:
                    obj = msgspec.json.decode(payload)
                except msgspec.DecodeError:
                    continue
                if isinstance(obj, dict):
                    yield obj
            continue
        if line.startswith(b"data:"):
            data_lines.append(line[5:].lstrip(b" "))
    if data_lines:
        payload = b"\n".join(data_lines)
        if not payload.startswith(b"[DONE]"):
            try:
                obj = msgspec.json.decode(payload)
                if isinstance(obj, dict):
                    yield obj
            except msgspec.DecodeError:
                pass
