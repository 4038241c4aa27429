"""Alibaba Cloud Model Studio (DashScope): Qwen-Image and Wan text-to-image (docs/protocols.md §13,
"Alibaba DashScope").

References: Alibaba Cloud Model Studio "Qwen - text-to-image API reference",
https://www.alibabacloud.com/help/en/model-studio/qwen-image-api (and the Qwen-Image-Edit reference
beside it), and "Wan - text-to-image V2 API reference",
https://www.alibabacloud.com/help/en/model-studio/text-to-image-v2-api-reference (asynchronous task,
task query, states); error codes from the Model Studio error-code page.

Two protocols, chosen by model, both with a Bearer key:
* Qwen-Image (`qwen-image`, `qwen-image-plus`; `qwen-image-edit` with the image in the message):
  synchronous `POST /api/v1/services/aigc/multimodal-generation/generation` with a `messages` input;
  one image per call, so `n` is n parallel calls. Sizes are a fixed list (nearest one sent).
* Wan (`wan2.2-t2i-flash`, `wan2.2-t2i-plus`, `wanx2.1-t2i-turbo`, ...): `POST .../text2image/
  image-synthesis` with `X-DashScope-Async: enable` → `output.task_id`, then the engine polls
  `GET /api/v1/tasks/{task_id}` (PENDING / RUNNING / SUCCEEDED / FAILED / CANCELED / UNKNOWN): tasks,
  `Prefer: respond-async`, webhooks, restart-resume and cancel (`POST .../tasks/{id}/cancel`) work as
  for every polled provider. Sides 512-1440.
`size` goes as `W*H`; `negative_prompt`, `prompt_extend`, `watermark` (false unless asked) and `seed`
are request fields. Result URLs expire after 24 h, so `url` answers are re-hosted (`rehost` option).
`DASHSCOPE_BASE_URL` selects the region (international: https://dashscope-intl.aliyuncs.com).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import aiohttp
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
from ..errors import GatewayError, UpstreamError
from .base import Capabilities, PollingProvider, RouteSpec, StreamingProvider
from .dashscope_wire import (
    ASYNC_PATH,
    QWEN_SIZES,
    RUNNING,
    SYNC_PATH,
    TASK_PATH,
    async_body,
    error_of,
    is_sync,
    sync_body,
    sync_images,
    task_images,
)
from .http import Answer, HttpProvider, connection_error, fan_out, poll_each

MAX_N = 4


def _routes() -> tuple[RouteSpec, ...]:
    return (
        RouteSpec("qwen-image", "qwen-image", description="DashScope Qwen-Image"),
        RouteSpec("qwen-image-plus", "qwen-image-plus", description="DashScope Qwen-Image Plus"),
        RouteSpec("qwen-image-edit", "qwen-image-edit", description="DashScope Qwen-Image-Edit (edits)"),
        *(RouteSpec(m, m, description=f"DashScope Wan {m} (asynchronous task)")
          for m in ("wan2.2-t2i-flash", "wan2.2-t2i-plus", "wanx2.1-t2i-turbo")),
    )


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    watermark: bool = False
    prompt_extend: bool | None = None  # None: DashScope's default (on)


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class DashScopeProvider(HttpProvider, StreamingProvider, PollingProvider):
    name: ClassVar[str] = "dashscope"
    env_prefix: ClassVar[str] = "DASHSCOPE"
    default_base_url: ClassVar[str] = "https://dashscope.aliyuncs.com"
    label: ClassVar[str] = "DashScope"
    capabilities: ClassVar[Capabilities] = Capabilities(
        edits=True, max_n=MAX_N, sizes={"qwen-image-edit": (), "qwen-image": QWEN_SIZES})
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions
    poll_interval_s: ClassVar[float | None] = 2.0

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {ctx.api_key}"}

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        if is_sync(ctx.upstream_model):
            yield await self._sync(req, ctx)
            return
        pending = await self.submit(req, ctx)
        yield Progress(0, status="queued")
        yield pending

    async def _sync(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        o: RouteOptions = self.route_options(ctx)
        b = sync_body(req, ctx.upstream_model, o.watermark, o.prompt_extend)
        answers = await fan_out([self._post(SYNC_PATH, b, ctx) for _ in range(req.n)])
        images = [img for data in answers for img in sync_images(data)]
        return self._result(images, b["parameters"].get("size"), ctx)

    def _result(self, images: list[GeneratedImage], size: Any, ctx: CallContext) -> ProviderResult:
        meta: dict[str, Any] = {"size": str(size).replace("*", "x")} if size else {}
        return ProviderResult(images, meta=meta)

    async def _post(self, path: str, b: dict[str, Any], ctx: CallContext,
                    headers: dict[str, str] | None = None) -> Any:
        a = await self.call(self.base_url + path, ctx, json=b, headers={**self._headers(ctx), **(headers or {})})
        return self._checked(a, ctx)

    def _checked(self, a: Answer, ctx: CallContext) -> Any:
        data = a.json()
        if a.status >= 400 or (isinstance(data, dict) and data.get("code") and not data.get("output")):
            raise error_of(a.status, data, a.body, a.headers, [ctx.api_key])
        return data

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        o: RouteOptions = self.route_options(ctx)
        b = async_body(req, ctx.upstream_model, o.watermark, o.prompt_extend)
        data = await self._post(ASYNC_PATH, b, ctx, {"X-DashScope-Async": "enable"})
        output = data.get("output") if isinstance(data, dict) else None
        tid = output.get("task_id") if isinstance(output, dict) else None
        if not isinstance(tid, str) or not tid:
            raise UpstreamError("DashScope accepted the task without a task_id.", code="upstream_error")
        return Pending({"task_id": tid, "size": b["parameters"].get("size"), "since": time.time()})

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        """One GET per task (DashScope has no batch query)."""
        return await poll_each(handles, lambda h: self._poll_one(h, ctx))

    async def _poll_one(self, handle: dict[str, Any], ctx: CallContext) -> PollOutcome:
        tid = str(handle["task_id"])
        try:
            async with self.session.get(self.base_url + TASK_PATH + tid, headers=self._headers(ctx)) as resp:
                a = Answer(resp.status, await resp.read(), resp.headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, self.label) from None
        data = self._checked(a, ctx)
        output = data.get("output") if isinstance(data, dict) else None
        if not isinstance(output, dict):
            raise UpstreamError("DashScope answered the task query without an output.", code="upstream_error",
                                retryable=True)
        status = output.get("task_status")
        secrets = [ctx.api_key]
        if status in RUNNING:
            return Progress(0, status="queued" if status == "PENDING" else "in_progress")
        if status == "SUCCEEDED":
            return self._result(task_images(output, secrets), handle.get("size"), ctx)
        if status == "FAILED":
            return error_of(200, output, b"", {}, secrets)
        if status == "CANCELED":
            return GatewayError(f"DashScope task {tid} was canceled.", status=409, type="invalid_request_error",
                                code="task_canceled")
        # UNKNOWN: the task does not exist (any more): DashScope keeps tasks for 24 h.
        return UpstreamError(f"DashScope no longer knows task {tid} (status {status}).", code="upstream_task_lost")

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        """Only a PENDING task can be canceled; anything else is left to run out (best effort)."""
        tid = str(handle.get("task_id") or "")
        if not tid:
            return
        try:
            await self.call(self.base_url + TASK_PATH + tid + "/cancel", ctx, data=b"", headers=self._headers(ctx))
        except GatewayError:
            pass
