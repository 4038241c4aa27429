"""OpenRouter: any image-output model it lists, through its chat-completions endpoint.

References: https://openrouter.ai/docs/features/multimodal/image-generation (`POST /api/v1/chat/completions`
with `modalities: ["image", "text"]` and `image_config.{aspect_ratio, image_size}`; the images come back as
base64 data URLs in `choices[0].message.images[].image_url.url`), https://openrouter.ai/docs/api/reference/errors
(`{"error": {"code", "message", "metadata"}}`, HTTP status = code; 402 out of credits, 403 moderation,
408 timeout, 429 rate limit with Retry-After, 502 model down, 503 no provider; an error after the model
started comes in a 200 body).

No built-in routes: callers name `openrouter/<model>` (e.g. `openrouter/google/gemini-2.5-flash-image`),
or a route sets `provider: openrouter, upstream_model: <model>`. n > 1 is n parallel calls. Edits send the
caller's images as `image_url` content parts (URLs as given, bytes as data URLs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from ..core.types import CallContext, GeneratedImage, ImageRequest, ProviderResult
from ..errors import GatewayError, InvalidRequest, UpstreamError, scrub
from ..media.sizes import nearest_ratio_of, png_size, requested_shape
from .base import Capabilities, RouteSpec, SyncProvider
from .errmap import error
from .http import HttpProvider, fan_out, retry_after
from .references import url_or_data_url

RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
SIZES = ("1K", "2K", "4K")


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    image_size: str | None = None  # 1K / 2K / 4K (Gemini models)
    app_url: str | None = None  # HTTP-Referer: OpenRouter's app attribution
    app_title: str | None = None  # X-Title


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class OpenRouterProvider(HttpProvider, SyncProvider):
    name: ClassVar[str] = "openrouter"
    env_prefix: ClassVar[str] = "OPENROUTER"
    default_base_url: ClassVar[str] = "https://openrouter.ai/api/v1"
    label: ClassVar[str] = "OpenRouter"
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=4, takes_aspect_ratio=True,
                                                        aspect_ratios=RATIOS)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = ()
    Options = Options
    RouteOptions = RouteOptions

    def body(self, req: ImageRequest, ctx: CallContext) -> dict[str, Any]:
        o: RouteOptions = self.route_options(ctx)
        content: Any = req.prompt
        if req.images:
            content = [{"type": "text", "text": req.prompt}] + [
                {"type": "image_url", "image_url": {"url": url_or_data_url(i)}}
                for i in req.images]
        config: dict[str, Any] = {}
        raw = req.extra.get("aspect_ratio")
        if raw is not None and not isinstance(raw, str):
            raise InvalidRequest("'aspect_ratio' must be a string such as \"16:9\".", param="aspect_ratio")
        shape = requested_shape(req.size, raw)
        if shape is not None:
            config["aspect_ratio"] = raw if raw in RATIOS else nearest_ratio_of(*shape, RATIOS)
        size = req.extra.get("image_size", o.image_size)
        if size is not None:
            if size not in SIZES:
                raise InvalidRequest("'image_size' must be 1K, 2K or 4K.", param="image_size", code="invalid_value")
            config["image_size"] = size
        body: dict[str, Any] = {"model": ctx.upstream_model, "messages": [{"role": "user", "content": content}],
                                "modalities": ["image", "text"], "stream": False}
        if config:
            body["image_config"] = config
        if req.user:
            body["user"] = req.user
        return body

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        o: RouteOptions = self.route_options(ctx)
        h = {"Authorization": f"Bearer {ctx.api_key}"}
        if o.app_url:
            h["HTTP-Referer"] = o.app_url
        if o.app_title:
            h["X-Title"] = o.app_title
        return h

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        body, headers = self.body(req, ctx), self._headers(ctx)
        url = self.base_url + "/chat/completions"
        answers = await fan_out([self._one(url, body, headers, ctx) for _ in range(req.n)])
        images = [img for got in answers for img in got[0][:1]]
        usage = answers[-1][1]
        meta: dict[str, Any] = {}
        if "image_config" in body and "aspect_ratio" in body["image_config"]:
            meta["aspect_ratio"] = body["image_config"]["aspect_ratio"]
        size = png_size(images[0].b64)
        if size:
            meta["size"] = size
        return ProviderResult(images, usage=usage, meta=meta)

    async def _one(self, url: str, body: dict[str, Any], headers: dict[str, str],
                   ctx: CallContext) -> tuple[list[GeneratedImage], dict[str, Any] | None]:
        a = await self.call(url, ctx, json=body, headers=headers)
        data = _decode(a.body)
        if a.status >= 400 or (isinstance(data, dict) and isinstance(data.get("error"), dict)):
            raise openrouter_error(a.status, data, a.body, a.headers, [ctx.api_key])
        return images_of(data)


def _decode(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw) if raw.strip() else None
    except msgspec.DecodeError:
        return None


def images_of(data: Any) -> tuple[list[GeneratedImage], dict[str, Any] | None]:
    """The data-URL images of a chat-completions answer; a content-filter stop is a policy error."""
    choices = data.get("choices") if isinstance(data, dict) else None
    choice: dict[str, Any] = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) \
        else {}
    message: dict[str, Any] = choice["message"] if isinstance(choice.get("message"), dict) else {}
    out = []
    for item in message.get("images") or ():
        url = (item.get("image_url") or {}).get("url") if isinstance(item, dict) else None
        if isinstance(url, str) and url.startswith("data:") and "," in url:
            head, _, payload = url.partition(",")
            out.append(GeneratedImage(b64=payload, content_type=head[5:].split(";")[0] or "image/png"))
        elif isinstance(url, str) and url.startswith(("https://", "http://")):
            out.append(GeneratedImage(url=url))
    if not out:
        reason = str(choice.get("finish_reason") or "")
        native = str(choice.get("native_finish_reason") or "")
        if reason == "content_filter" or native.upper() in ("SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY"):
            raise GatewayError("OpenRouter's model refused this prompt (content filter). Rephrase the prompt.",
                               status=400, type="invalid_request_error", code="content_policy_violation")
        text = message.get("content")
        said = f": {text.strip()[:300]}" if isinstance(text, str) and text.strip() else ""
        raise UpstreamError(f"OpenRouter returned no image (is the model image-capable?){said}",
                            code="upstream_no_image")
    usage = data.get("usage") if isinstance(data, dict) else None
    return out, usage if isinstance(usage, dict) else None


def openrouter_error(status: int, data: Any, raw: bytes, headers: Any, secrets: list[str | None]) -> GatewayError:
    found = data.get("error") if isinstance(data, dict) else None
    err: dict[str, Any] = found if isinstance(found, dict) else {}
    code = err.get("code")
    code = code if isinstance(code, int) else (status if status >= 400 else 502)
    message = str(err.get("message") or raw[:200].decode("utf-8", "replace").strip() or f"HTTP {status}")
    out: GatewayError
    if code == 401:
        out = error("auth", f"OpenRouter rejected the API key: {message}")
    elif code == 402:
        out = error("quota", f"OpenRouter: out of credits: {message}")
    elif code == 403:  # moderation flagged the input
        meta: dict[str, Any] = err["metadata"] if isinstance(err.get("metadata"), dict) else {}
        why = ", ".join(str(r) for r in meta.get("reasons") or ())
        out = error("policy", f"OpenRouter's moderation flagged the prompt{f' ({why})' if why else ''}: {message}")
    elif code == 408:
        out = error("timeout", f"OpenRouter timed out: {message}")
    elif code == 429:
        out = error("rate", f"OpenRouter is rate limiting: {message}", retry=retry_after(headers))
    elif code == 404:
        out = error("not_found", f"OpenRouter does not know this model: {message}")
    elif 400 <= code < 500:
        out = error("invalid", f"OpenRouter refused the request: {message}", code="invalid_request")
    else:
        out = error("upstream", f"OpenRouter upstream error ({code}): {message}")
    return scrub(out, secrets)
