"""GrsAi (grsai.com): nano-banana family and sora-image / gpt-4o-image (docs/protocols.md §3).

Two modes, per provider or route (`mode` option):
* "stream" (default): the submit answers with a stream of task snapshots; each one becomes a Progress
  event, the last one the result. If the stream breaks after the task id was seen, the job is handed
  to the engine as Pending and polled on /v1/draw/result: resubmitting would bill the caller twice.
* "poll": `webHook: "-1"`, an immediate ack with the id, then the engine polls.

`n` > 1 is n parallel submits merged into one result. Result URLs expire after 2 h: the gateway
re-hosts them, as every upstream URL (the generic `rehost` option, core/options.py). Options: `endpoint`,
`takes_image_size`, `image_size`, `shut_progress`, `not_found_grace_s` (60).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar, Literal

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
from .grsai_wire import (
    NANO_RATIOS,
    SnapshotParser,
    endpoint_for,
    envelope_error,
    failure,
    image_from_json,
    image_json,
    images_of,
    submit_body,
    unwrap,
)
from .http import HttpProvider, connection_error, fan_out, poll_each

RESULT_PATH = "/v1/draw/result"
MAX_N = 4
NOT_FOUND_GRACE_S = 60.0  # -22 right after a submit means "not visible yet", later "expired"


def _routes() -> tuple[RouteSpec, ...]:
    nano = ("nano-banana", "nano-banana-fast", "nano-banana-pro")
    gpt = ("sora-image", "gpt-4o-image")
    return (
        *(RouteSpec(m, m, description=f"GrsAi {m} (/v1/draw/nano-banana)") for m in nano),
        *(RouteSpec(m, m, description=f"GrsAi {m} (/v1/draw/completions)") for m in gpt),
        RouteSpec("sd-fast", "nano-banana-fast", description="Fast drafts: GrsAi nano-banana-fast"),
    )


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    mode: Literal["stream", "poll"] = "stream"
    endpoint: str | None = None  # default: by model (/v1/draw/nano-banana or /v1/draw/completions)
    takes_image_size: bool | None = None  # default: nano-banana-pro and nano-banana-2
    image_size: str | None = None  # 1K / 2K / 4K when the model takes it
    shut_progress: bool = False
    not_found_grace_s: float = NOT_FOUND_GRACE_S


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class _Sub:
    """One submitted task while its stream is read."""

    __slots__ = ("broken", "id", "images", "progress")

    def __init__(self) -> None:
        self.id: str | None = None
        self.progress = 0
        self.images: list[GeneratedImage] | None = None
        self.broken = False


class GrsAiProvider(HttpProvider, StreamingProvider, PollingProvider):
    name: ClassVar[str] = "grsai"
    env_prefix: ClassVar[str] = "GRSAI"
    default_base_url: ClassVar[str] = "https://grsaiapi.com"
    label: ClassVar[str] = "GrsAi"
    # The prompt pipeline passes extra["aspect_ratio"]; the body fits it to the model's own list.
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=MAX_N, takes_aspect_ratio=True,
                                                        aspect_ratios=NANO_RATIOS)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {ctx.api_key}", "Content-Type": "application/json"}

    def _prepare(self, req: ImageRequest, ctx: CallContext, poll_mode: bool) -> tuple[str, dict[str, Any],
                                                                                      dict[str, Any]]:
        # (variations and n > MAX_N never get here: the router checks the capabilities)
        o: RouteOptions = self.route_options(ctx)
        body = submit_body(req, ctx.upstream_model, o, poll_mode)
        url = self.base_url + endpoint_for(ctx.upstream_model, o)
        meta = {"aspect_ratio": body.get("aspectRatio") or body.get("size"), "image_size": body.get("imageSize")}
        return url, body, meta

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        """Polling mode (`mode: poll`): n submits acked with their ids, then the engine polls."""
        url, body, meta = self._prepare(req, ctx, True)
        ids = await fan_out([self._submit(url, body, ctx) for _ in range(req.n)])
        return Pending({"ids": ids, "since": time.time(), "meta": meta})

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        if self.route_options(ctx).mode == "poll":
            pending = await self.submit(req, ctx)
            yield Progress(0, status="queued")
            yield pending
            return
        url, body, meta = self._prepare(req, ctx, False)
        async for ev in self._streams(url, body, ctx, req.n, meta):
            yield ev

    async def _submit(self, url: str, body: dict[str, Any], ctx: CallContext) -> str:
        """Polling mode: submit and return the task id from the ack."""
        data, status, raw = await self._post_json(url, body, ctx)
        inner = data.get("data") if isinstance(data, dict) else None
        tid = inner.get("id") if isinstance(inner, dict) else None
        if status != 200 or not isinstance(data, dict) or data.get("code") != 0 or not isinstance(tid, str):
            raise envelope_error(status, data, raw, [ctx.api_key])
        return tid

    async def _post_json(self, url: str, body: dict[str, Any], ctx: CallContext) -> tuple[Any, int, bytes]:
        a = await self.call(url, ctx, json=body, headers={"Authorization": f"Bearer {ctx.api_key}"})
        return a.json(), a.status, a.body

    async def _stream_one(self, url: str, body: dict[str, Any], ctx: CallContext) -> AsyncIterator[dict[str, Any]]:
        """The snapshots of one submit, until the stream ends (cleanly or not)."""
        try:
            resp = await self.session.post(url, data=msgspec.json.encode(body), headers=self._headers(ctx))
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, "GrsAi") from None
        async with resp:
            if resp.status != 200:
                raw = await resp.read()
                try:
                    data = msgspec.json.decode(raw)
                except msgspec.DecodeError:
                    data = None
                raise envelope_error(resp.status, data, raw, [ctx.api_key])
            parser = SnapshotParser()
            try:
                async for chunk in resp.content.iter_any():
                    for obj in parser.feed(chunk):
                        yield obj
            except (aiohttp.ClientError, TimeoutError):
                return  # the caller decides: poll if the task id is known, else fail

    async def _streams(self, url: str, body: dict[str, Any], ctx: CallContext, n: int,
                       meta: dict[str, Any]) -> AsyncIterator[ProviderEvent]:
        """n parallel streams merged: one Progress per change of the average, then a result or Pending."""
        subs = [_Sub() for _ in range(n)]
        queue: asyncio.Queue[tuple[int, dict[str, Any] | BaseException | None]] = asyncio.Queue()

        async def pump(i: int) -> None:
            try:
                async for obj in self._stream_one(url, body, ctx):
                    await queue.put((i, obj))
                await queue.put((i, None))
            except Exception as e:
                await queue.put((i, e))

        tasks = [asyncio.create_task(pump(i)) for i in range(n)]
        secrets = [ctx.api_key]
        try:
            open_, last = n, -1
            while open_:
                i, item = await queue.get()
                sub = subs[i]
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    open_ -= 1
                    if sub.images is None:
                        if sub.id is None:
                            raise UpstreamError("GrsAi ended the stream before naming the task; not resubmitted "
                                                "(it may have been billed).", code="upstream_disconnected")
                        sub.broken = True
                    continue
                if isinstance(item.get("code"), int) and item["code"] != 0 and not isinstance(item.get("data"), dict):
                    raise envelope_error(200, item, b"", secrets)
                snap = unwrap(item)
                self._apply(sub, snap, secrets)
                percent = sum(s.progress for s in subs) // n
                if percent != last and percent < 100:
                    last = percent
                    yield Progress(percent)
            if any(s.broken for s in subs):
                # Poll only the tasks whose stream broke; the finished ones travel in the handle.
                done = [image_json(img) for s in subs for img in s.images or ()]
                yield Pending({"ids": [s.id for s in subs if s.images is None], "done": done,
                               "since": time.time(), "meta": meta})
                return
            yield ProviderResult([img for s in subs for img in s.images or ()], meta=meta)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    def _apply(sub: _Sub, snap: dict[str, Any], secrets: list[str | None]) -> None:
        tid = snap.get("id")
        if isinstance(tid, str) and tid:
            sub.id = tid
        status = snap.get("status")
        if status == "failed":
            raise failure(snap, secrets)
        if status == "succeeded":
            images = images_of(snap)
            if not images:
                raise UpstreamError("GrsAi reported success but returned no image.", code="upstream_no_image")
            sub.images, sub.progress = images, 100
            return
        p = snap.get("progress")
        if isinstance(p, int | float) and not isinstance(p, bool):
            sub.progress = max(sub.progress, min(99, max(0, int(p))))

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        """One outcome per handle (GrsAi has no batch query)."""
        return await poll_each(handles, lambda h: self._poll_one(h, ctx))

    async def _poll_one(self, handle: dict[str, Any], ctx: CallContext) -> Progress | ProviderResult:
        ids: list[str] = handle["ids"]
        snaps = await asyncio.gather(*(self._result(tid, handle, ctx) for tid in ids))
        subs = [_Sub() for _ in ids]
        for sub, snap in zip(subs, snaps, strict=True):
            if snap is not None:
                self._apply(sub, snap, [ctx.api_key])
        done = [image_from_json(d) for d in handle.get("done") or ()]
        if all(s.images is not None for s in subs):
            images = done + [img for s in subs for img in s.images or ()]
            return ProviderResult(images, meta=dict(handle.get("meta") or {}))
        return Progress(sum(s.progress for s in subs) // len(subs))

    async def _result(self, tid: str, handle: dict[str, Any], ctx: CallContext) -> dict[str, Any] | None:
        """The task's snapshot, or None when this poll could not tell (not visible yet, a network blip)."""
        try:
            data, status, raw = await self._post_json(self.base_url + RESULT_PATH, {"id": tid}, ctx)
        except GatewayError as e:
            if e.retryable or e.status == 504:
                return None  # a blip; the job's deadline bounds how long we keep trying
            raise
        code = data.get("code") if isinstance(data, dict) else None
        if code == -22:
            grace = self.route_options(ctx).not_found_grace_s
            if time.time() - float(handle.get("since", 0)) < grace:
                return None
            raise UpstreamError(f"GrsAi no longer knows task {tid} (code -22: expired or never created).",
                                code="upstream_task_lost")
        if status == 200 and code == 0 and isinstance(data.get("data"), dict):
            snap: dict[str, Any] = data["data"]
            return snap
        if status >= 500 or status == 429:
            return None
        raise envelope_error(status, data, raw, [ctx.api_key])
