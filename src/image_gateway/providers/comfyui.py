"""ComfyUI (a self-hosted node graph server): the built-in text-to-image workflow, or any API-format
workflow a route names, with progress and previews over its websocket (docs/protocols.md §18;
the wire facts and their sources are in comfyui_wire.py).

A job: wait for a slot of this instance (one GPU: `concurrency` 1 running, `queue_size` waiting, then
429 queue_full with Retry-After), upload edit images (`POST /upload/image`, fed to the mapped
LoadImage inputs), connect `WS /ws?clientId=…`, `POST /prompt {prompt, client_id}`, then relay
`progress` {value, max} and binary preview frames as Progress until `executing` {node: null} (or
`execution_success`); read `GET /history/{prompt_id}` and fetch each output with `GET /view`. When
the websocket drops (or cannot connect) the job goes on as a Pending handle the engine polls on
/history. Cancel: `POST /queue {delete: [id]}`, and `POST /interrupt` when it is the running one.

Routes: `comfyui` (the built-in graph; option `checkpoint`, default the first GET
/object_info/CheckpointLoaderSimple lists), or `provider: comfyui` with `workflow: path.json` and
`inputs: {prompt: "6.text", seed: "3.seed", n: "5.batch_size", image: "10.image", ...}`: fields the
caller did not send keep the workflow's values, except the seed (random unless given). The file is
read and checked at every config load, so a reload picks up a change. COMFYUI_API_KEY, when set, is
sent as a Bearer token (an auth proxy in front of ComfyUI).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
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
    Submitting,
)
from ..errors import GatewayError, UpstreamError
from . import comfyui_graph as graph
from . import comfyui_wire as wire
from .base import Capabilities, PollingProvider, RouteSpec, StreamingProvider
from .http import HttpProvider, connection_error, poll_each
from .limits import AccountLimiter
from .references import caller_bytes
from .selfhosted import content_type_of, probe_get

HISTORY_WAIT_S = 5.0  # `executing: null` can come a moment before the history entry is written


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    concurrency: int = 1  # prompts one instance runs at once (one GPU)
    queue_size: int = 16  # callers waiting for it before a 429
    retry_after_s: float | None = 5.0  # Retry-After of that 429
    checkpoint: str | None = None  # built-in graph; None: the first the instance lists
    negative_prompt: str | None = None
    steps: int | None = None
    cfg: float | None = None
    sampler_name: str | None = None
    scheduler: str | None = None
    websocket: bool = True  # False: no websocket, poll /history (no progress)
    missing_polls: int = 20  # polls a prompt may be in neither history nor queue before it counts as lost


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    workflow: str | None = None  # an API-format workflow file (relative to the config file's folder)
    inputs: dict[str, str] = {}  # request field -> "<node id>.<input>"
    graph: dict[str, Any] | None = None  # the workflow, read from `workflow` at load (or given inline)


class ComfyUIProvider(HttpProvider, StreamingProvider, PollingProvider):
    name: ClassVar[str] = "comfyui"
    env_prefix: ClassVar[str] = "COMFYUI"
    default_base_url: ClassVar[str] = "http://127.0.0.1:8188"
    label: ClassVar[str] = wire.NAME
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, masks=True, max_n=16, needs_key=False)
    poll_interval_s: ClassVar[float | None] = 1.0
    signals_submit: ClassVar[bool] = True  # jobs wait for the instance's slot first
    Options = Options
    RouteOptions = RouteOptions
    builtin_routes: ClassVar[Sequence[RouteSpec]] = (
        RouteSpec("comfyui", "comfyui", description="ComfyUI, built-in checkpoint text-to-image workflow "
                                                     "(COMFYUI_BASE_URL)"),
    )

    @classmethod
    def check_route_options(cls, options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        inputs = options.get("inputs") or {}
        if options.get("workflow"):
            path = Path(options["workflow"])
            graph = wire.load_workflow(path if path.is_absolute() else base_dir / path)
        elif options.get("graph") is not None:
            graph = wire.checked_graph(options["graph"], "graph")
        elif inputs:
            raise ValueError("inputs needs a workflow (an API-format workflow file)")
        else:
            return options
        if "prompt" not in inputs:
            raise ValueError("inputs must map `prompt` to the workflow's prompt text, e.g. prompt: \"6.text\"")
        wire.check_inputs(graph, inputs, "the workflow")
        return {**options, "graph": graph}

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        o: Options = self.options
        self.limiter = AccountLimiter(o.concurrency, o.queue_size, o.retry_after_s, what="This ComfyUI instance")
        self._held: set[str] = set()  # handle ids holding a slot of `limiter`
        self._missing: dict[str, int] = {}
        self._checkpoint: str | None = None

    def _headers(self, ctx: CallContext | None = None) -> dict[str, str]:
        key = ctx.api_key if ctx is not None else self.settings.api_key
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def probe(self) -> bool | None:
        return await probe_get(self.session, self.base_url + "/system_stats", self._headers())

    # -- the graph --------------------------------------------------------------------------------------

    def _check(self, req: ImageRequest, ctx: CallContext) -> None:
        """What the route's workflow cannot take, refused before the job waits for a slot."""
        o: RouteOptions = self.route_options(ctx)
        graph.check(req, wire.BUILTIN_INPUTS if o.graph is None else o.inputs)

    async def _prompt(self, req: ImageRequest, ctx: CallContext) -> tuple[dict[str, Any], dict[str, Any]]:
        """The filled-in graph and what the result reports (seed, size)."""
        o: RouteOptions = self.route_options(ctx)
        builtin = o.graph is None
        inputs = wire.BUILTIN_INPUTS if o.graph is None else o.inputs
        values = graph.values(req, o, inputs)
        if "checkpoint" in inputs:
            values["checkpoint"] = o.checkpoint or (await self._default_checkpoint(ctx) if builtin else None)
        if req.images:
            values["image"] = await self._upload(await caller_bytes(req.images[0], ctx, "image"), ctx)
        if req.mask is not None:
            values["mask"] = await self._upload(await caller_bytes(req.mask, ctx, "mask"), ctx)
        filled = wire.fill(wire.BUILTIN_GRAPH if o.graph is None else o.graph, inputs, values)
        return filled, graph.meta_of(filled, inputs, values["seed"])

    async def _default_checkpoint(self, ctx: CallContext) -> str:
        if self._checkpoint is None:
            data = await self._get_json("/object_info/CheckpointLoaderSimple", ctx)
            names = wire.checkpoints_of(data)
            if not names:
                raise UpstreamError("ComfyUI lists no checkpoints (models/checkpoints is empty); set the route "
                                    "option `checkpoint` or add one.", code="upstream_no_checkpoint")
            self._checkpoint = names[0]
        return self._checkpoint

    async def _upload(self, data: bytes, ctx: CallContext) -> str:
        form = aiohttp.FormData()
        ext = content_type_of(data).split("/")[1]
        form.add_field("image", data, filename=f"gateway-{uuid.uuid4().hex}.{ext}", content_type=f"image/{ext}")
        form.add_field("type", "input")
        form.add_field("overwrite", "true")
        a = await self.call(self.base_url + "/upload/image", ctx, data=form, headers=self._headers(ctx))
        body = a.json()
        if a.status != 200 or not isinstance(body, dict) or not isinstance(body.get("name"), str):
            raise wire.prompt_error(a, [ctx.api_key]) if a.status != 200 else UpstreamError(
                "ComfyUI answered an upload without a file name.", code="upstream_error")
        sub = str(body.get("subfolder") or "")
        return f"{sub}/{body['name']}" if sub else str(body["name"])

    async def _get_json(self, path: str, ctx: CallContext) -> Any:
        try:
            async with self.session.get(self.base_url + path, headers=self._headers(ctx)) as r:
                raw = await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, wire.NAME) from None
        if status in (401, 403):
            raise GatewayError(f"ComfyUI refused the key (HTTP {status}).", status=401, code="invalid_api_key")
        if status != 200:
            raise UpstreamError(f"ComfyUI answered GET {path.split('?')[0]} with HTTP {status}.", retryable=True)
        try:
            return msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise UpstreamError(f"ComfyUI answered GET {path.split('?')[0]} with no JSON.") from None

    # -- a job ------------------------------------------------------------------------------------------

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        self._check(req, ctx)
        yield Progress(0, status="queued")
        await self.limiter.acquire(1)
        hid, pid = uuid.uuid4().hex, None
        handed_over = settled = False
        try:
            yield Submitting()
            prompt, meta = await self._prompt(req, ctx)
            client_id = uuid.uuid4().hex
            ws = await self._connect(client_id, ctx) if self.route_options(ctx).websocket else None
            try:
                pid = await self._queue(prompt, client_id, ctx)
                handle = {"hid": hid, "prompt_id": pid, "n": req.n, "meta": meta, "since": time.time()}
                if ws is not None:
                    ended: list[bool] = []
                    try:
                        async for ev in self._follow(ws, pid, ctx, ended):
                            yield ev
                    except GatewayError:
                        settled = True  # it failed upstream: nothing left to cancel
                        raise
                    settled = bool(ended)
                    entry = await self._history_entry(pid, ctx, HISTORY_WAIT_S if ended else 0.0)
                    if entry is not None:
                        outcome = await self._outcome(entry, handle, ctx)
                        if isinstance(outcome, GatewayError):
                            raise outcome
                        if isinstance(outcome, ProviderResult):
                            yield outcome
                            return
            finally:
                if ws is not None:
                    await ws.close()
            self._held.add(hid)  # the poller owns the job (and the slot) from here on
            handed_over = True
            yield Pending(handle)
        finally:
            if not handed_over:
                self.limiter.release(1)
                if pid is not None and not settled:
                    await asyncio.shield(self._cancel_pid(pid, ctx))

    async def _connect(self, client_id: str, ctx: CallContext) -> aiohttp.ClientWebSocketResponse | None:
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        try:
            return await self.session.ws_connect(url, headers=self._headers(ctx), heartbeat=30.0,
                                                 timeout=aiohttp.ClientWSTimeout(ws_close=5.0))
        except (aiohttp.ClientError, TimeoutError):
            return None  # no progress then: the job is polled on /history

    async def _queue(self, prompt: dict[str, Any], client_id: str, ctx: CallContext) -> str:
        a = await self.call(self.base_url + "/prompt", ctx, json={"prompt": prompt, "client_id": client_id},
                            headers=self._headers(ctx))
        data = a.json()
        if a.status != 200 or not isinstance(data, dict) or not isinstance(data.get("prompt_id"), str):
            raise wire.prompt_error(a, [ctx.api_key])
        return str(data["prompt_id"])

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse, pid: str, ctx: CallContext,
                      ended: list[bool]) -> AsyncIterator[Progress]:
        """Progress from the websocket until the prompt ends (`ended` gets True) or fails (raise); a
        dropped socket just returns (the history, or the poller, says what became of it)."""
        percent, running = 0, False
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                preview = wire.preview_of(msg.data)
                if preview is not None and running:
                    yield Progress(percent, preview)
                continue
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            try:
                m = msgspec.json.decode(msg.data)
            except msgspec.DecodeError:
                continue
            kind, data = (m.get("type"), m.get("data")) if isinstance(m, dict) else (None, None)
            if not isinstance(data, dict) or data.get("prompt_id", pid) != pid:
                continue
            if kind == "execution_start":
                running = True
                yield Progress(0)
            elif kind == "progress" and isinstance(data.get("value"), int) and isinstance(data.get("max"), int):
                running = True
                percent = max(0, min(99, data["value"] * 100 // max(1, data["max"])))
                yield Progress(percent)
            elif kind == "execution_error":
                raise wire.execution_error(data, [ctx.api_key])
            elif kind == "execution_interrupted":
                raise wire.interrupted()
            elif kind == "execution_success" or (kind == "executing" and data.get("node") is None
                                                  and data.get("prompt_id") == pid):
                ended.append(True)
                return

    async def _history_entry(self, pid: str, ctx: CallContext, wait_s: float = 0.0) -> dict[str, Any] | None:
        end = time.monotonic() + wait_s
        while True:
            data = await self._get_json(f"/history/{pid}", ctx)
            entry = data.get(pid) if isinstance(data, dict) else None
            if isinstance(entry, dict) and wire.history_state(entry) != "running":
                return entry
            if time.monotonic() >= end:
                return None
            await asyncio.sleep(0.1)

    async def _outcome(self, entry: dict[str, Any], handle: dict[str, Any], ctx: CallContext) -> PollOutcome:
        if wire.history_state(entry) == "error":
            return wire.history_error(entry, [ctx.api_key])
        files = wire.output_images(entry)
        n = int(handle.get("n", 1))
        if len(files) < n:
            return UpstreamError(f"ComfyUI's workflow made {len(files)} images for {n}.", code="upstream_no_image")
        images = await asyncio.gather(*(self._view(f, ctx) for f in files[:n]))
        return ProviderResult(list(images), meta=dict(handle.get("meta") or {}))

    async def _view(self, f: dict[str, str], ctx: CallContext) -> GeneratedImage:
        try:
            async with self.session.get(self.base_url + "/view", params=f, headers=self._headers(ctx)) as r:
                data, status = await r.read(), r.status
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, wire.NAME) from None
        if status != 200 or not data:
            raise UpstreamError(f"ComfyUI could not serve output {f['filename']} (HTTP {status}).", retryable=True)
        return GeneratedImage(b64=base64.b64encode(data).decode(), content_type=content_type_of(data))

    # -- polling (after the websocket dropped, or after a restart) --------------------------------------

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> list[PollOutcome]:
        return await poll_each(handles, lambda h: self._poll_one(h, ctx))

    async def _poll_one(self, h: dict[str, Any], ctx: CallContext) -> PollOutcome:
        hid, pid = str(h.get("hid")), str(h["prompt_id"])
        if hid not in self._held:  # a handle from before a restart holds a slot this process did not count
            self.limiter.force(1)
            self._held.add(hid)
        entry = await self._history_entry(pid, ctx)
        if entry is not None:
            self._release(hid, pid)
            return await self._outcome(entry, h, ctx)
        running, waiting = wire.queue_ids(await self._get_json("/queue", ctx))
        if pid in running or pid in waiting:
            self._missing.pop(pid, None)
            return Progress(50 if pid in running else 0, status="in_progress" if pid in running else "queued")
        self._missing[pid] = self._missing.get(pid, 0) + 1
        if self._missing[pid] > self.route_options(ctx).missing_polls:
            self._release(hid, pid)
            return UpstreamError(f"ComfyUI no longer knows prompt {pid} (restarted, or its queue was cleared).",
                                 code="upstream_task_lost")
        return Progress(0, status="queued")

    def _release(self, hid: str, pid: str) -> None:
        self._missing.pop(pid, None)
        if hid in self._held:
            self._held.discard(hid)
            self.limiter.release(1)

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        pid = str(handle.get("prompt_id"))
        try:
            await self._cancel_pid(pid, ctx)
        finally:
            self._release(str(handle.get("hid")), pid)

    async def _cancel_pid(self, pid: str, ctx: CallContext) -> None:
        """Out of the queue if it waits; interrupted if it is the one running. Best effort."""
        with contextlib.suppress(GatewayError):
            await self.call(self.base_url + "/queue", ctx, json={"delete": [pid]}, headers=self._headers(ctx))
            running, _ = wire.queue_ids(await self._get_json("/queue", ctx))
            if pid in running:
                await self.call(self.base_url + "/interrupt", ctx, json={}, headers=self._headers(ctx))

