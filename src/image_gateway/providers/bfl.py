"""Black Forest Labs FLUX API (api.bfl.ai): submit, then poll the returned polling_url.

References: https://docs.bfl.ai/api_integration/integration_guidelines (global and regional
endpoints; "always use the polling_url returned"; delivery URLs expire after 10 minutes),
https://docs.bfl.ai/api-reference/utility/get-result (ResultResponse: id, status, result.sample,
progress, details), https://docs.bfl.ai/api_integration/errors (HTTP codes; Ready / Pending /
Request Moderated / Content Moderated / Task not found / Error), and the per-model pages
(/v1/flux-kontext-pro, /v1/flux-pro-1.1-ultra, /v1/flux-pro-1.1, /v1/flux-dev, /v1/flux-2-pro,
/v1/flux-2-flex, /v1/flux-2-max, /v1/flux-2-klein-4b|9b). Wire details: bfl_wire.py, docs/protocols.md §14.

`POST {base}/v1/{model}` with header `x-key` answers `{id, polling_url}`; the engine's poller then
GETs that polling_url (never one the gateway builds). The key goes only to the configured base URL's
origin or to an https `api[.<region>].bfl.ai` host: a polling_url naming any other host fails the
task instead (SSRF / key exfiltration guard). `n` > 1 is n tasks submitted in parallel. Result
`sample` URLs expire in ~10 minutes, so `url` answers are re-hosted (option `rehost`, default true).
Options: `rehost`, `safety_tolerance`, `output_format`, `not_found_grace_s` (10).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import msgspec

from ..core.types import CallContext, ImageRequest, Pending, PollOutcome, Progress, ProviderResult
from ..errors import UpstreamError
from . import bfl_wire as wire
from .base import Capabilities, PollingProvider, RouteSpec
from .http import HttpProvider, fan_out
from .polled_http import check_url, detail_error, poll_all, send

LABEL = "BFL"
MAX_N = 4
BFL_HOSTS = re.compile(r"api(\.[a-z0-9-]+)*\.bfl\.(ai|ml)")


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    safety_tolerance: int | None = None  # 0 (strict) .. 5/6; BFL's default is 2
    output_format: str | None = None  # jpeg / png (the caller's output_format wins)
    not_found_grace_s: float = 10.0  # "Task not found" right after a submit is not yet a lost task


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def _routes() -> tuple[RouteSpec, ...]:
    described = {
        "flux-kontext-pro": "FLUX.1 Kontext [pro]: generation and edits (input_image)",
        "flux-kontext-max": "FLUX.1 Kontext [max]: generation and edits (input_image)",
        "flux-pro-1.1": "FLUX1.1 [pro] (width/height, multiples of 32)",
        "flux-pro-1.1-ultra": "FLUX1.1 [pro] Ultra, up to 4 MP (aspect_ratio)",
        "flux-dev": "FLUX.1 [dev]",
        "flux-2-pro": "FLUX.2 [pro]: generation and edits (up to 8 input images)",
        "flux-2-max": "FLUX.2 [max]: generation and edits",
        "flux-2-flex": "FLUX.2 [flex]: adjustable steps/guidance, edits",
        "flux-2-klein-4b": "FLUX.2 [klein] 4B",
        "flux-2-klein-9b": "FLUX.2 [klein] 9B",
    }
    return tuple(RouteSpec(m, m, description=f"Black Forest Labs {d}") for m, d in described.items())


class BflProvider(HttpProvider, PollingProvider):
    name: ClassVar[str] = "bfl"
    env_prefix: ClassVar[str] = "BFL"
    default_base_url: ClassVar[str] = "https://api.bfl.ai"
    label: ClassVar[str] = LABEL
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=MAX_N, takes_aspect_ratio=True,
                                                        aspect_ratios=wire.RATIOS)
    poll_interval_s: ClassVar[float | None] = 1.0
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._percent: dict[str, int] = {}  # task id -> last progress seen (memory only)

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        return {"x-key": ctx.api_key or "", "accept": "application/json"}

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        # (variations and n > MAX_N never get here: the router checks the capabilities)
        o: RouteOptions = self.route_options(ctx)
        body, size = wire.submit_body(req, ctx.upstream_model, o)
        url = f"{self.base_url}/v1/{ctx.upstream_model.strip('/')}"
        tasks = await fan_out([self._submit(url, body, ctx) for _ in range(req.n)])
        meta: dict[str, Any] = {}
        if size:
            meta["size"] = size
        return Pending({"tasks": tasks, "since": time.time(), "meta": meta})

    async def _submit(self, url: str, body: dict[str, Any], ctx: CallContext) -> dict[str, str]:
        a = await self.call(url, ctx, json=body, headers=self._headers(ctx))
        if a.status >= 400:
            raise detail_error(a, LABEL, [ctx.api_key])
        data = a.json()
        tid = data.get("id") if isinstance(data, dict) else None
        if not isinstance(tid, str) or not tid:
            raise UpstreamError(f"BFL accepted the request (HTTP {a.status}) without a task id.",
                                code="upstream_bad_answer")
        polling = check_url(data.get("polling_url"), self.base_url, BFL_HOSTS, "BFL's polling_url")
        return {"id": tid, "url": polling}

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        return await poll_all(handles, lambda h: self._poll_one(h, ctx), self._last)

    def _last(self, handle: dict[str, Any]) -> int:
        tasks = handle.get("tasks") or []
        return sum(self._percent.get(str(t.get("id")), 0) for t in tasks) // max(len(tasks), 1)

    async def _poll_one(self, handle: dict[str, Any], ctx: CallContext) -> PollOutcome:
        tasks: list[dict[str, str]] = handle.get("tasks") or []
        answers = await fan_out([self._get(t, ctx) for t in tasks])
        images, percents = [], []
        for t, data in zip(tasks, answers, strict=True):
            status = wire.status_of(data)
            if status == wire.READY:
                img = wire.image_of(data)
                if img is None:
                    self._forget(handle)
                    return UpstreamError(f"BFL reported task {t['id']} Ready without a result sample.",
                                         code="upstream_no_image")
                images.append(img)
                percents.append(100)
            elif status in (*wire.MODERATED, *wire.FAILED) or (status == wire.NOT_FOUND and self._lost(handle, ctx)):
                self._forget(handle)
                return wire.failure(data, t["id"], [ctx.api_key])
            else:
                percents.append(self._percent.get(t["id"], 0) if status == wire.NOT_FOUND else wire.percent_of(data))
                self._percent[t["id"]] = percents[-1]
        if len(images) == len(tasks):
            self._forget(handle)
            return ProviderResult(images, meta=dict(handle.get("meta") or {}))
        queued = all(wire.status_of(d) in (wire.NOT_FOUND, "Queued") for d in answers)
        return Progress(min(99, sum(percents) // len(percents)), status="queued" if queued else "in_progress")

    async def _get(self, task: dict[str, str], ctx: CallContext) -> dict[str, Any]:
        url = check_url(task.get("url"), self.base_url, BFL_HOSTS, "BFL's polling_url")
        a = await send(self, "GET", url, self._headers(ctx))
        data = a.json()
        if a.status == 404 or (a.status < 400 and isinstance(data, dict)):
            return data if isinstance(data, dict) else {"status": wire.NOT_FOUND}
        raise detail_error(a, LABEL, [ctx.api_key])

    def _lost(self, handle: dict[str, Any], ctx: CallContext) -> bool:
        grace: float = self.route_options(ctx).not_found_grace_s
        return time.time() - float(handle.get("since", 0)) >= grace

    def _forget(self, handle: dict[str, Any]) -> None:
        for t in handle.get("tasks") or ():
            self._percent.pop(str(t.get("id")), None)
