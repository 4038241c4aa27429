"""Midjourney through a midjourney-proxy (novicezk, trueai-org forks, new-api relays): docs/protocols.md §2.

Submit-then-poll: `stream()` (or `submit()`) submits `/mj/submit/imagine` (ceil(n/4) of them in parallel for n > 4)
and hands the engine a Pending handle; `poll()` asks for every handle's tasks in one
`POST /mj/task/list-by-condition` and turns them into progress (with the blurred preview), a
result, or an error. `n` images come from splitting each 2×2 grid (or the fork's `imageUrls`);
with the route option `upscale: true` the grid is followed by U1..Un upscales instead.

Provider options: `auth_header` (default mj-api-secret; some forks take `Authorization`),
`auth_scheme` (e.g. `Bearer`), `path_prefix` (default `/mj`, or e.g. `/mj-fast/mj`),
`concurrency` (3) and `queue_size` (10) per account, `retry_after_s` (the Retry-After of code 23 and of
a full account queue; unset by default: the router's short capacity back-off), `poll_interval_s` (3),
`missing_polls` (20: polls a task may be absent from the answer before it counts as lost).
"""

from __future__ import annotations

import asyncio
import base64
import math
import uuid
from collections.abc import AsyncIterator, Sequence
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
    Submitting,
)
from ..errors import GatewayError, UpstreamError
from ..media.convert import sniff_format
from ..media.fetch import fetch_image
from ..media.grid import split_grid_async
from . import mj_wire as wire
from .base import Capabilities, PollingProvider, RouteSpec, StreamingProvider
from .http import HttpProvider
from .limits import AccountLimiter
from .references import caller_bytes, data_url, url_or_data_url

NAME = "Midjourney proxy"
DOWNLOAD_MAX = 50 << 20
DOWNLOAD_TRIES = 3


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    auth_header: str = "mj-api-secret"  # some forks take `Authorization`
    auth_scheme: str | None = None  # e.g. "Bearer"
    path_prefix: str | None = None  # default "/mj" (none when the base URL ends in /mj)
    concurrency: int = 3  # jobs one account runs at once
    queue_size: int = 10  # callers waiting for a slot before a 429
    retry_after_s: float | None = None  # Retry-After of code 23 and of a full queue
    missing_polls: int = 20  # polls a task may be absent from the answer before it counts as lost
    upscale: bool = False  # U1..Un after the grid, for full-resolution images


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class MidjourneyProvider(HttpProvider, StreamingProvider, PollingProvider):
    name: ClassVar[str] = "midjourney"
    env_prefix: ClassVar[str] = "MJ"
    default_base_url: ClassVar[str] = "http://127.0.0.1:8080"
    label: ClassVar[str] = NAME
    # A mask has no Midjourney equivalent: it is ignored (masks=True keeps edits with one working).
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, masks=True, max_n=10, takes_aspect_ratio=True)
    poll_interval_s: ClassVar[float | None] = 3.0
    signals_submit: ClassVar[bool] = True  # jobs wait for an account slot first (core.types.Submitting)
    Options = Options
    RouteOptions = RouteOptions
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        RouteSpec("mj-v7", "--v 7", description="Midjourney v7 via a midjourney-proxy"),
        RouteSpec("mj-v6", "--v 6.1", description="Midjourney v6.1 via a midjourney-proxy"),
        RouteSpec("mj-v5", "--v 5.2", description="Midjourney v5.2 via a midjourney-proxy"),
        RouteSpec("niji-6", "--niji 6", description="Niji journey 6 via a midjourney-proxy"),
    )

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._limiters: dict[tuple[str, str | None], AccountLimiter] = {}  # memory only: holds keys
        self._held: dict[str, tuple[AccountLimiter, int]] = {}  # handle id -> slots it holds
        self._missing: dict[str, int] = {}  # task id -> consecutive polls it was absent
        self._download_failures: dict[str, int] = {}

    # -- plumbing ---------------------------------------------------------------------------------------

    def _url(self, ctx: CallContext, path: str) -> str:
        prefix = self.route_options(ctx).path_prefix
        if prefix is None:
            prefix = "" if self.base_url.endswith("/mj") else "/mj"
        return f"{self.base_url}{prefix}{path}"

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if ctx.api_key:
            o: RouteOptions = self.route_options(ctx)
            headers[o.auth_header] = f"{o.auth_scheme} {ctx.api_key}" if o.auth_scheme else ctx.api_key
        return headers

    async def _post(self, ctx: CallContext, path: str, body: Any) -> tuple[int, Any, bytes]:
        a = await self.call(self._url(ctx, path), ctx, data=msgspec.json.encode(body), headers=self._headers(ctx))
        return a.status, a.json(), a.body

    async def _submit(self, ctx: CallContext, path: str, body: dict[str, Any]) -> str:
        status, data, raw = await self._post(ctx, path, body)
        return wire.submit_task_id(status, data, raw, [ctx.api_key], self.route_options(ctx).retry_after_s)

    def _limiter(self, ctx: CallContext) -> AccountLimiter:
        account = (self.base_url, ctx.api_key)
        lim = self._limiters.get(account)
        if lim is None:
            o: RouteOptions = self.route_options(ctx)
            lim = self._limiters[account] = AccountLimiter(o.concurrency, o.queue_size, o.retry_after_s,
                                                           what="This Midjourney account")
        return lim

    def _release(self, handle: dict[str, Any]) -> None:
        held = self._held.pop(str(handle.get("hid")), None)
        if held is not None:
            held[0].release(held[1])
        for tid in handle.get("tasks", ()):
            self._missing.pop(tid, None)
        self._download_failures.pop(str(handle.get("hid")), None)

    # -- submit -----------------------------------------------------------------------------------------

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        """Queued, then (once an account slot is free) Submitting, then the Pending handle."""
        # (variations never get here: the router checks the capabilities)
        body = await self._body(req, ctx)
        grids = math.ceil(req.n / 4)
        limiter = self._limiter(ctx)
        yield Progress(0, status="queued")
        slots = await limiter.acquire(grids)
        try:
            yield Submitting()  # (inside the try: a consumer that stops here gives the slots back)
        except BaseException:
            limiter.release(slots)
            raise
        yield await self._send(req, ctx, body, limiter, slots)

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        body = await self._body(req, ctx)
        grids = math.ceil(req.n / 4)
        limiter = self._limiter(ctx)
        return await self._send(req, ctx, body, limiter, await limiter.acquire(grids))

    async def _body(self, req: ImageRequest, ctx: CallContext) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": wire.build_prompt(req, ctx.upstream_model)}
        refs = await self._reference_images(req, ctx)
        if refs:
            body["base64Array"] = refs
        if ctx.request_id:
            body["state"] = ctx.request_id
        return body

    async def _send(self, req: ImageRequest, ctx: CallContext, body: dict[str, Any], limiter: AccountLimiter,
                    slots: int) -> Pending:
        """Submit the grid(s) holding `slots` of the account (given back if the submit fails)."""
        grids = math.ceil(req.n / 4)
        try:
            answers = await asyncio.gather(*(self._submit(ctx, "/submit/imagine", body) for _ in range(grids)),
                                           return_exceptions=True)
            ids = [a for a in answers if isinstance(a, str)]
            errors = [a for a in answers if isinstance(a, BaseException)]
            if errors:
                if ids:  # some were accepted: don't leave them running for nobody
                    await self._cancel_ids(ids, ctx)
                raise errors[0]
        except BaseException:
            limiter.release(slots)
            raise
        hid = uuid.uuid4().hex
        self._held[hid] = (limiter, slots)
        return Pending({"hid": hid, "tasks": ids, "n": req.n, "phase": "grid",
                        "upscale": self.route_options(ctx).upscale, "grids": grids})

    async def _reference_images(self, req: ImageRequest, ctx: CallContext) -> list[str]:
        """Edit inputs as data URLs (`base64Array`); the mask has no Midjourney equivalent and is ignored."""
        out = []
        for i, img in enumerate(req.images):
            if img.data is not None or (img.url and img.url.startswith("data:")):
                out.append(url_or_data_url(img))
            elif img.url:
                data = await caller_bytes(img, ctx, "image", f"reference image {i + 1}", DOWNLOAD_MAX,
                                          policy_param="images")  # (the body field the URL came in)
                out.append(data_url(data, "image/png"))
        return out

    # -- poll -------------------------------------------------------------------------------------------

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        ids = list(dict.fromkeys(t for h in handles for t in h.get("tasks", ())))
        tasks = await self._fetch(ids, ctx)
        work = [self._outcome(h, tasks, ctx) for h in handles]
        return list(await asyncio.gather(*work))

    async def _fetch(self, ids: list[str], ctx: CallContext) -> dict[str, dict[str, Any]]:
        status, data, _ = await self._post(ctx, "/task/list-by-condition", {"ids": ids})
        if status in (401, 403):
            raise GatewayError(f"The Midjourney proxy rejected the key (HTTP {status}).", status=status,
                               type="invalid_request_error", code="invalid_api_key")
        if status != 200 or not isinstance(data, list):
            raise UpstreamError(f"The Midjourney proxy answered a task query with HTTP {status}.", retryable=True)
        return {str(t["id"]): t for t in data if isinstance(t, dict) and t.get("id") is not None}

    async def _outcome(self, h: dict[str, Any], tasks: dict[str, dict[str, Any]], ctx: CallContext) -> PollOutcome:
        ids: list[str] = list(h.get("tasks", ()))
        found = [tasks[i] for i in ids if i in tasks]
        limit = self.route_options(ctx).missing_polls
        for i in ids:
            if i in tasks:
                self._missing.pop(i, None)
            else:
                self._missing[i] = self._missing.get(i, 0) + 1
                if self._missing[i] > limit:
                    self._release(h)
                    return UpstreamError(f"The Midjourney proxy no longer knows task {i}.", code="upstream_task_lost")
        for t in found:
            if wire.status_of(t) in ("FAILURE", "CANCEL"):
                self._release(h)
                return wire.task_failure(t, [ctx.api_key])
        if len(found) == len(ids) and all(wire.status_of(t) == "SUCCESS" for t in found):
            if h.get("phase") == "grid" and h.get("upscale"):
                return await self._upscale(h, found, ctx)
            return await self._result(h, found)
        self._adopt(h, ctx)
        return self._progress(h, found, len(ids))

    def _adopt(self, h: dict[str, Any], ctx: CallContext) -> None:
        """A handle from before a restart holds upstream slots this process does not know about yet."""
        hid = str(h.get("hid"))
        if hid not in self._held:
            lim = self._limiter(ctx)
            n = min(int(h.get("grids", 1)), lim.limit)
            lim.force(n)
            self._held[hid] = (lim, n)

    @staticmethod
    def _progress(h: dict[str, Any], found: list[dict[str, Any]], total: int) -> Progress:
        percent = sum(wire.percent_of(t) for t in found) // max(total, 1)
        if h.get("upscale"):
            percent = percent * 8 // 10 if h.get("phase") == "grid" else 80 + percent // 5
        queued = all(wire.status_of(t) in ("NOT_START", "SUBMITTED") for t in found)
        preview = next((t["imageUrl"] for t in found if wire.status_of(t) == "IN_PROGRESS"
                        and isinstance(t.get("imageUrl"), str) and t["imageUrl"]), None)
        return Progress(min(percent, 99), GeneratedImage(url=preview) if preview else None,
                        "queued" if queued else "in_progress")

    async def _upscale(self, h: dict[str, Any], grids: list[dict[str, Any]], ctx: CallContext) -> PollOutcome:
        """Grid(s) done: submit U1..Un (four per grid) and poll those from now on."""
        wanted = []
        n = int(h.get("n", 1))
        for gi, t in enumerate(grids):
            wanted += [(str(t["id"]), i) for i in range(1, min(4, n - 4 * gi) + 1)]
        body = [{"taskId": tid, "action": "UPSCALE", "index": i} for tid, i in wanted]
        answers = await asyncio.gather(*(self._submit(ctx, "/submit/change", b) for b in body),
                                       return_exceptions=True)
        errors = [a for a in answers if isinstance(a, BaseException)]
        if errors:
            self._release(h)
            err = errors[0]
            return err if isinstance(err, GatewayError) else UpstreamError(f"upscale submit failed ({err!r})")
        return Pending({**h, "phase": "upscale", "tasks": [a for a in answers if isinstance(a, str)],
                        "grid_tasks": h.get("tasks", [])})

    async def _result(self, h: dict[str, Any], found: list[dict[str, Any]]) -> PollOutcome:
        n = int(h.get("n", 1))
        try:
            images: list[GeneratedImage] = []
            for t in found:
                images += await self._images_of(t, h.get("phase") == "upscale")
                if len(images) >= n:
                    break
        except GatewayError as e:
            hid = str(h.get("hid"))
            self._download_failures[hid] = self._download_failures.get(hid, 0) + 1
            if self._download_failures[hid] < DOWNLOAD_TRIES:
                return Progress(99)  # the images exist: try again at the next poll
            self._release(h)
            return e
        self._release(h)
        if len(images) < n:
            return UpstreamError(f"The Midjourney proxy returned {len(images)} images for {n}.",
                                 code="upstream_no_image")
        return ProviderResult(images[:n])

    async def _images_of(self, t: dict[str, Any], upscaled: bool) -> list[GeneratedImage]:
        prompt = wire.final_prompt_of(t)
        url = t.get("imageUrl")
        if upscaled:
            if not isinstance(url, str) or not url:
                raise UpstreamError(f"The Midjourney task {t.get('id')} succeeded without an image.")
            return [GeneratedImage(url=url, revised_prompt=prompt)]
        urls = wire.image_urls_of(t)
        if len(urls) >= 4:
            return [GeneratedImage(url=u, revised_prompt=prompt) for u in urls[:4]]
        if not isinstance(url, str) or not url:
            raise UpstreamError(f"The Midjourney task {t.get('id')} succeeded without an image.")
        grid = await fetch_image(self.session, url, DOWNLOAD_MAX, 60.0)  # no auth header: a CDN URL
        try:
            parts = await split_grid_async(grid)
        except (ValueError, OSError) as e:
            raise UpstreamError(f"The Midjourney grid image could not be split ({e}).") from None
        fmt = sniff_format(grid)  # the parts keep a JPEG's or WebP's format, anything else is PNG (media/grid.py)
        ctype = f"image/{fmt}" if fmt in ("jpeg", "webp") else "image/png"
        return [GeneratedImage(b64=base64.b64encode(p).decode(), revised_prompt=prompt, content_type=ctype)
                for p in parts]

    # -- cancel -----------------------------------------------------------------------------------------

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        """MJ-TAI's `POST /mj/task/{id}/cancel`; a proxy without it (MJ-NZK) just lets the task run out."""
        try:
            await self._cancel_ids(list(handle.get("tasks", ())), ctx)
        finally:
            self._release(handle)

    async def _cancel_ids(self, ids: list[str], ctx: CallContext) -> None:
        async def one(tid: str) -> None:
            try:
                await self._post(ctx, f"/task/{tid}/cancel", {})
            except GatewayError:
                pass

        await asyncio.gather(*(one(t) for t in ids))

