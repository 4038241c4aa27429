"""fal.ai's queue (queue.fal.run): submit, poll the returned status_url, fetch the response_url.

References: https://docs.fal.ai/model-endpoints/queue (`POST https://queue.fal.run/{model_id}[/{subpath}]`
→ `{request_id, response_url, status_url, cancel_url}`; `GET status_url` → IN_QUEUE with
`queue_position`, IN_PROGRESS with `logs` (`?logs=1`), COMPLETED; `GET response_url` → the model's
output; `PUT cancel_url`; status and response URLs drop the model's subpath, so they are always taken
from the answer, never built), https://docs.fal.ai/documentation/model-apis/inference/queue (the
lifecycle), and the model pages (fal.ai/models/fal-ai/flux/dev/api, fal-ai/flux-pro/v1.1,
fal-ai/bytedance/seedream/v4/text-to-image: `image_size` enum or `{width, height}`, `num_images`,
`seed`, output `{images: [{url, content_type, width, height}], seed, has_nsfw_concepts}`).

Header `Authorization: Key <FAL_KEY>`. Any `fal/<model path>` works: the body is `prompt`,
`image_size`, `num_images` (= n), the caller's extra body fields, and for edits the images as data
URLs in `image_urls` (or `image_url`: option `image_field`). URLs from an answer may carry the key
only to the configured base URL's origin or an https `*.fal.run` host. Result files are on fal's CDN
for a limited time, so `url` answers are re-hosted (`rehost`, default true).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec
from yarl import URL

from ..core.types import CallContext, GeneratedImage, ImageRequest, Pending, PollOutcome, Progress, ProviderResult
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from ..media.sizes import fit_pixels, requested_shape
from .base import Capabilities, PollingProvider, RouteSpec
from .http import HttpProvider
from .polled_http import check_url, detail_error, poll_all, send
from .references import url_or_data_url

LABEL = "fal"
HOSTS = re.compile(r"([a-z0-9-]+\.)*fal\.run")
# fal's named sizes (their pixels per the model pages).
NAMED = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
         "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
_PERCENT = re.compile(r"(\d{1,3})%")
POLICY = ("content_policy_violation", "content_moderation")


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    image_field: str | None = None  # default: image_urls (a list); e.g. image_url for Kontext
    max_side: int = 2048  # the largest custom image_size side sent (seedream: 4096)


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def image_size(req: ImageRequest, model: str, o: RouteOptions) -> tuple[Any, str | None]:
    """A named size when the request is exactly one, else `{width, height}` (multiples of 16)."""
    explicit = req.extra.get("image_size")
    if isinstance(explicit, str) and explicit in NAMED:
        w, h = NAMED[explicit]
        return explicit, f"{w}x{h}"
    shape = requested_shape(req.size, req.extra.get("aspect_ratio"))
    if shape is None:
        return None, None
    for name, wh in NAMED.items():
        if wh == shape:
            return name, f"{wh[0]}x{wh[1]}"
    low = 1024 if "seedream" in model else 256
    w, h = fit_pixels(*shape, multiple=16, min_side=low, max_side=max(o.max_side, low))
    return {"width": w, "height": h}, f"{w}x{h}"


def build_body(req: ImageRequest, model: str, o: RouteOptions) -> tuple[dict[str, Any], str | None]:
    body: dict[str, Any] = {k: v for k, v in req.extra.items() if k not in ("aspect_ratio", "image_size")}
    body["prompt"] = req.prompt
    size, reported = image_size(req, model, o)
    if size is not None:
        body["image_size"] = size
    body["num_images"] = req.n
    if req.output_format in ("png", "jpeg", "jpg", "webp"):
        body["output_format"] = "jpeg" if req.output_format == "jpg" else req.output_format
    if req.images:
        urls = [url_or_data_url(i) for i in req.images]
        field = o.image_field or "image_urls"
        if field.endswith("s"):
            body[field] = urls
        elif len(urls) > 1:
            raise InvalidRequest(f"This fal model takes one input image ({field}).", param="image",
                                 code="too_many_images")
        else:
            body[field] = urls[0]
    return body, reported


def images_of(data: Any) -> list[GeneratedImage]:
    items = data.get("images") if isinstance(data, dict) else None
    if not isinstance(items, list) and isinstance(data, dict) and isinstance(data.get("image"), dict):
        items = [data["image"]]
    out = []
    for it in items or ():
        url = it.get("url") if isinstance(it, dict) else None
        if isinstance(url, str) and url.startswith(("http://", "https://", "data:")):
            out.append(GeneratedImage(url=url, content_type=it.get("content_type") or None))
    return out


def percent_of(status: dict[str, Any]) -> int:
    logs = status.get("logs")
    text = " ".join(str(x.get("message", "")) for x in logs if isinstance(x, dict)) if isinstance(logs, list) else ""
    found = _PERCENT.findall(text[-2000:])
    return min(99, int(found[-1])) if found else 0


class FalProvider(HttpProvider, PollingProvider):
    name: ClassVar[str] = "fal"
    env_prefix: ClassVar[str] = "FAL"
    key_env: ClassVar[str | None] = "FAL_KEY"
    default_base_url: ClassVar[str] = "https://queue.fal.run"
    label: ClassVar[str] = LABEL
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=4)
    poll_interval_s: ClassVar[float | None] = 1.0
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        RouteSpec("fal-flux-dev", "fal-ai/flux/dev", description="FLUX.1 [dev] on fal"),
        RouteSpec("fal-flux-pro", "fal-ai/flux-pro/v1.1", description="FLUX1.1 [pro] on fal"),
        RouteSpec("fal-seedream", "fal-ai/bytedance/seedream/v4/text-to-image",
                  options={"max_side": 4096}, description="ByteDance Seedream 4.0 on fal"),
    )
    Options = Options
    RouteOptions = RouteOptions

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._percent: dict[str, int] = {}

    def _auth(self, ctx: CallContext) -> dict[str, str]:
        return {"Authorization": f"Key {ctx.api_key or ''}"}

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        o: RouteOptions = self.route_options(ctx)
        body, size = build_body(req, ctx.upstream_model, o)
        a = await self.call(f"{self.base_url}/{ctx.upstream_model.strip('/')}", ctx, json=body,
                            headers=self._auth(ctx))
        if a.status >= 400:
            raise detail_error(a, LABEL, [ctx.api_key], policy_types=POLICY)
        data = a.json()
        rid = data.get("request_id") if isinstance(data, dict) else None
        if not isinstance(rid, str) or not rid:
            raise UpstreamError(f"fal accepted the request (HTTP {a.status}) without a request_id.",
                                code="upstream_bad_answer")
        handle: dict[str, Any] = {"id": rid, "since": time.time(), "n": req.n,
                                  "meta": {"size": size} if size else {}}
        for k in ("status_url", "response_url", "cancel_url"):
            handle[k] = check_url(data.get(k), self.base_url, HOSTS, f"fal's {k}")
        return Pending(handle)

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        return await poll_all(handles, lambda h: self._poll_one(h, ctx), lambda h: self._percent.get(h["id"], 0))

    async def _poll_one(self, handle: dict[str, Any], ctx: CallContext) -> PollOutcome:
        url = str(URL(check_url(handle.get("status_url"), self.base_url, HOSTS, "fal's status_url"))
                  .update_query(logs="1"))
        a = await send(self, "GET", url, self._auth(ctx))
        data = a.json()
        if a.status >= 400 or not isinstance(data, dict):
            raise detail_error(a, LABEL, [ctx.api_key], policy_types=POLICY) if a.status >= 400 else \
                UpstreamError(f"fal answered a status poll with HTTP {a.status} and no status.", retryable=True)
        status = data.get("status")
        if status == "IN_QUEUE":
            return Progress(0, status="queued")
        if status != "COMPLETED":
            self._percent[handle["id"]] = max(self._percent.get(handle["id"], 0), percent_of(data))
            return Progress(self._percent[handle["id"]])
        self._percent.pop(handle["id"], None)
        if data.get("error"):
            return self._failed(str(data.get("error")), str(data.get("error_type") or ""), ctx)
        return await self._response(handle, ctx)

    def _failed(self, error: str, kind: str, ctx: CallContext) -> GatewayError:
        text = redact(error, [ctx.api_key])
        if kind in POLICY or "nsfw" in text.lower():
            return InvalidRequest(f"fal rejected the request under its content policy: {text}",
                                  code="content_policy_violation")
        return UpstreamError(f"fal request failed: {text}", code="upstream_task_failed", retryable=True)

    async def _response(self, handle: dict[str, Any], ctx: CallContext) -> PollOutcome:
        url = check_url(handle.get("response_url"), self.base_url, HOSTS, "fal's response_url")
        a = await send(self, "GET", url, self._auth(ctx))
        if a.status >= 400:
            err = detail_error(a, LABEL, [ctx.api_key], policy_types=POLICY)
            return err if not err.retryable else UpstreamError(err.message, code="upstream_task_failed",
                                                               retryable=True)
        data = a.json()
        images = images_of(data)
        nsfw = data.get("has_nsfw_concepts") if isinstance(data, dict) else None
        if images and isinstance(nsfw, list) and nsfw and all(x is True for x in nsfw):
            return InvalidRequest("fal's safety checker flagged every generated image.",
                                  code="content_policy_violation")
        if not images:
            return UpstreamError("fal completed the request without an image.", code="upstream_no_image")
        meta = dict(handle.get("meta") or {})
        if isinstance(data, dict) and isinstance(data.get("seed"), int):
            meta["seed"] = data["seed"]
        return ProviderResult(images[: int(handle.get("n") or len(images))], meta=meta)

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        """PUT cancel_url (a request that already started or finished answers 400: ignored)."""
        try:
            url = check_url(handle.get("cancel_url"), self.base_url, HOSTS, "fal's cancel_url")
            await send(self, "PUT", url, self._auth(ctx))
        except GatewayError:
            pass
        self._percent.pop(str(handle.get("id")), None)
