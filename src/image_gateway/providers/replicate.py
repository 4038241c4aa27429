"""Replicate (api.replicate.com): predictions, answered at once when fast, else polled.

References: https://replicate.com/docs/topics/predictions/create-a-prediction (the
`POST /v1/models/{owner}/{name}/predictions` endpoint for official models, `POST /v1/predictions` with
a `version`; sync mode `Prefer: wait=N`: the prediction object with its output when done in time, else
an incomplete one to fetch from `urls.get`), https://replicate.com/docs/reference/http (the prediction
object: status starting / processing / succeeded / failed / canceled (/ aborted), output, error, logs,
urls.get / urls.cancel), https://replicate.com/docs/topics/predictions/rate-limits (429
`{"detail": "Request was throttled. Expected available in 1 second."}`); errors are RFC 7807
problem+json `{title, detail, status}` (replicate-python's ReplicateError). Model inputs:
replicate.com/black-forest-labs/flux-schnell/api (aspect_ratio enum, num_outputs 1-4, output_format
webp/jpg/png) and replicate.com/black-forest-labs/flux-1.1-pro/api (one image per prediction).

Any `owner/model` (or `owner/model:version`) works: the input is `prompt`, `aspect_ratio` (the nearest
of the model's enum), `num_outputs` where the model takes it (else n predictions in parallel), the
first edit image as a data URL in the `image_field` option's field (default `input_image`), and the
caller's extra body fields as they are. Output files live on replicate.delivery for about an hour,
so `url` answers are re-hosted (`rehost`, default true). Options: `wait_s` (Prefer: wait, 10),
`rehost`, `image_field`.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from ..core.types import (
    CallContext,
    GeneratedImage,
    ImageRequest,
    Pending,
    PollOutcome,
    Progress,
    ProviderEvent,
    ProviderResult,
)
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from ..media.sizes import nearest_ratio_of, requested_shape
from .base import Capabilities, PollingProvider, RouteSpec, StreamingProvider
from .http import HttpProvider, fan_out
from .polled_http import check_url, detail_error, poll_all, send
from .references import url_or_data_url

LABEL = "Replicate"
HOSTS = re.compile(r"api\.replicate\.com")
RATIOS = ("1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21")
PRO_RATIOS = ("1:1", "16:9", "3:2", "2:3", "4:5", "5:4", "9:16", "3:4", "4:3")
_PERCENT = re.compile(r"(\d{1,3})%")
RUNNING = ("starting", "processing")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    ratios: tuple[str, ...] = RATIOS
    num_outputs: int = 0  # the most `num_outputs` takes; 0: one image per prediction


MODELS = {
    "black-forest-labs/flux-schnell": ModelSpec(RATIOS, 4),
    "black-forest-labs/flux-dev": ModelSpec(RATIOS, 4),
    "black-forest-labs/flux-1.1-pro": ModelSpec(PRO_RATIOS, 0),
}


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    wait_s: int = 10  # Prefer: wait=N (1-60): a fast model answers the create call itself
    image_field: str = "input_image"  # the model input that takes an edit's image


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def build_input(req: ImageRequest, model: str, o: RouteOptions) -> tuple[dict[str, Any], int, str | None]:
    """The prediction `input`, how many predictions to create, and the aspect ratio sent."""
    spec = MODELS.get(model.split(":")[0], ModelSpec())
    inp: dict[str, Any] = {k: v for k, v in req.extra.items() if k != "aspect_ratio" and v is not None}
    inp["prompt"] = req.prompt
    ratio = None
    shape = requested_shape(req.size, req.extra.get("aspect_ratio"))
    if shape is not None:
        ratio = inp["aspect_ratio"] = nearest_ratio_of(*shape, spec.ratios)
    if req.images:
        if len(req.images) > 1:
            raise InvalidRequest("Replicate models take one input image here.", param="image", code="too_many_images")
        inp[o.image_field] = url_or_data_url(req.images[0])
    fmt = req.output_format
    if fmt in ("png", "webp", "jpeg", "jpg"):
        inp["output_format"] = "jpg" if fmt == "jpeg" else fmt
    calls = req.n
    if spec.num_outputs and req.n <= spec.num_outputs:
        inp["num_outputs"], calls = req.n, 1
    return inp, calls, ratio


def outputs_of(pred: dict[str, Any]) -> list[GeneratedImage]:
    out = pred.get("output")
    items = out if isinstance(out, list) else [out]
    return [GeneratedImage(url=u) for u in items
            if isinstance(u, str) and u.startswith(("http://", "https://", "data:"))]


def percent_of(pred: dict[str, Any]) -> int:
    """The last "NN%" of the logs (diffusers' progress bars), else 0."""
    logs = pred.get("logs")
    found = _PERCENT.findall(logs[-2000:]) if isinstance(logs, str) else []
    return min(99, int(found[-1])) if found else 0


def failure(pred: dict[str, Any], secrets: list[str | None]) -> GatewayError:
    status = str(pred.get("status"))
    error = redact(str(pred.get("error") or "no error text given"), secrets)
    if status in ("canceled", "aborted"):
        return UpstreamError(f"Replicate prediction {pred.get('id')} was {status}: {error}", code="upstream_cancelled")
    if "nsfw" in error.lower() or "safety" in error.lower():
        return InvalidRequest(f"Replicate's safety checker rejected the output: {error}",
                              code="content_policy_violation")
    return UpstreamError(f"Replicate prediction {pred.get('id')} failed: {error}", code="upstream_task_failed",
                         retryable=True)


class ReplicateProvider(HttpProvider, StreamingProvider, PollingProvider):
    name: ClassVar[str] = "replicate"
    env_prefix: ClassVar[str] = "REPLICATE"
    key_env: ClassVar[str | None] = "REPLICATE_API_TOKEN"
    default_base_url: ClassVar[str] = "https://api.replicate.com"
    label: ClassVar[str] = LABEL
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=4, takes_aspect_ratio=True,
                                                        aspect_ratios=RATIOS)
    poll_interval_s: ClassVar[float | None] = 1.0
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        RouteSpec("flux-schnell", "black-forest-labs/flux-schnell", description="FLUX.1 [schnell] on Replicate"),
        RouteSpec("flux-1.1-pro", "black-forest-labs/flux-1.1-pro", description="FLUX1.1 [pro] on Replicate"),
    )
    Options = Options
    RouteOptions = RouteOptions

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._percent: dict[str, int] = {}

    def _auth(self, ctx: CallContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {ctx.api_key or ''}"}

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        """Create the prediction(s); a result when they finished within `wait_s`, else a handle to poll."""
        o: RouteOptions = self.route_options(ctx)
        inp, calls, ratio = build_input(req, ctx.upstream_model, o)
        preds = await fan_out([self._create(inp, ctx, o) for _ in range(calls)])
        meta: dict[str, Any] = {"size": ratio} if ratio else {}
        for p in preds:
            if p.get("status") in ("failed", "canceled", "aborted"):
                raise failure(p, [ctx.api_key])
        if all(p.get("status") == "succeeded" for p in preds):
            yield self._result([p for p in preds], meta)
            return
        yield Progress(0, status="queued")
        yield Pending({"preds": [self._ref(p, ctx) for p in preds], "since": time.time(), "meta": meta})

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        pending: Pending | None = None
        async for ev in self.stream(req, ctx):
            if isinstance(ev, Pending):
                pending = ev
            elif isinstance(ev, ProviderResult):  # done already: the handle carries the outputs
                return Pending({"preds": [], "done": [i.url for i in ev.images], "meta": ev.meta})
        assert pending is not None
        return pending

    async def _create(self, inp: dict[str, Any], ctx: CallContext, o: Any) -> dict[str, Any]:
        model = ctx.upstream_model.strip("/")
        headers = {**self._auth(ctx), "Prefer": f"wait={max(1, min(60, o.wait_s))}"}
        if ":" in model:  # owner/model:version (a community model's version)
            url, body = f"{self.base_url}/v1/predictions", {"version": model.split(":", 1)[1], "input": inp}
        else:
            url, body = f"{self.base_url}/v1/models/{model}/predictions", {"input": inp}
        a = await self.call(url, ctx, json=body, headers=headers)
        if a.status >= 400:
            raise detail_error(a, LABEL, [ctx.api_key])
        data = a.json()
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            raise UpstreamError(f"Replicate answered HTTP {a.status} without a prediction.", code="upstream_bad_answer")
        return data

    def _ref(self, pred: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        urls = pred.get("urls") if isinstance(pred.get("urls"), dict) else {}
        assert isinstance(urls, dict)
        get = check_url(urls.get("get"), self.base_url, HOSTS, "Replicate's urls.get")
        ref: dict[str, Any] = {"id": pred["id"], "get": get}
        if isinstance(urls.get("cancel"), str):
            ref["cancel"] = urls["cancel"]
        if pred.get("status") == "succeeded":
            ref["done"] = [i.url for i in outputs_of(pred)]
        return ref

    def _result(self, preds: list[dict[str, Any]], meta: dict[str, Any]) -> ProviderResult:
        images = [img for p in preds for img in outputs_of(p)]
        if not images:
            raise UpstreamError("Replicate reported success but returned no image URL.", code="upstream_no_image")
        return ProviderResult(images, meta=dict(meta))

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        return await poll_all(handles, lambda h: self._poll_one(h, ctx), self._last)

    def _last(self, handle: dict[str, Any]) -> int:
        refs = handle.get("preds") or []
        return sum(self._percent.get(str(r.get("id")), 0) for r in refs) // max(len(refs), 1)

    async def _poll_one(self, handle: dict[str, Any], ctx: CallContext) -> PollOutcome:
        refs: list[dict[str, Any]] = handle.get("preds") or []
        meta = dict(handle.get("meta") or {})
        if not refs:
            return ProviderResult([GeneratedImage(url=u) for u in handle.get("done") or ()], meta=meta)
        preds = await fan_out([self._get(r, ctx) for r in refs])
        for p in preds:
            if p.get("status") in ("failed", "canceled", "aborted"):
                self._forget(handle)
                return failure(p, [ctx.api_key])
        if all(p.get("status") == "succeeded" for p in preds):
            self._forget(handle)
            return self._result(preds, meta)
        percents = [100 if p.get("status") == "succeeded" else percent_of(p) for p in preds]
        for r, pc in zip(refs, percents, strict=True):
            self._percent[str(r["id"])] = pc
        queued = all(p.get("status") == "starting" for p in preds)
        return Progress(min(99, sum(percents) // len(percents)), status="queued" if queued else "in_progress")

    async def _get(self, ref: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        if ref.get("done") is not None:
            return {"id": ref["id"], "status": "succeeded", "output": ref["done"]}
        url = check_url(ref.get("get"), self.base_url, HOSTS, "Replicate's urls.get")
        a = await send(self, "GET", url, self._auth(ctx))
        data = a.json()
        if a.status >= 400 or not isinstance(data, dict):
            raise detail_error(a, LABEL, [ctx.api_key]) if a.status >= 400 else \
                UpstreamError(f"Replicate answered a prediction poll with HTTP {a.status} and no prediction.",
                              retryable=True)
        return data

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        """POST urls.cancel for each prediction still running (best effort)."""
        for ref in handle.get("preds") or ():
            try:
                url = check_url(ref.get("cancel"), self.base_url, HOSTS, "Replicate's urls.cancel")
                await send(self, "POST", url, self._auth(ctx))
            except GatewayError:
                continue
        self._forget(handle)

    def _forget(self, handle: dict[str, Any]) -> None:
        for r in handle.get("preds") or ():
            self._percent.pop(str(r.get("id")), None)
