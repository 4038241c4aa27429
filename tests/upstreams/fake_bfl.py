"""Fake Black Forest Labs API (docs.bfl.ai): `POST /v1/{model}` → `{id, polling_url, cost}`, then
`GET /v1/get_result?id=` → `{id, status, result, progress, details}`; results on `/delivery/...`.

Auth: header `x-key`; missing → 403 `{"detail": "Not authenticated"}` (FastAPI's APIKeyHeader), wrong →
401 `{"detail": "Invalid API key"}`. Validation (FLUX.1 width/height multiples of 32 in 256-1440, a
prompt) → 422 FastAPI `{"detail": [{loc, msg, type}]}`. `credits` at 0 → 402; more than
`max_active` unfinished tasks → 429 (BFL's concurrency limit). Tasks are Pending for `steps` polls
(progress 0.0, 0.25...), then Ready with `result.sample` = `<base>/delivery/<id>.png`, unless the prompt
holds a `request_moderated` word ("Request Moderated" at once), a `content_moderated` word
("Content Moderated" at the end) or an `error_prompts` word ("Error"). `hang` keeps them Pending.
`expire()` makes every delivery URL answer 403 as an expired signed URL does. `polling_base` puts the
polling_url on another origin (the gateway must refuse to follow it).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .base import FakeServer, FakeState, recording_middleware
from .pictures import png, prompt_color, small


@dataclass
class BflTask:
    id: str
    model: str
    body: dict[str, Any]
    key: str
    polls: int = 0
    status: str = "Pending"
    t0: float = field(default_factory=time.monotonic)


class BflState(FakeState):
    def __init__(self, api_key: str = "bfl-test-key", steps: int = 2, hang: bool = False, max_active: int = 24,
                 credits: int = 10**9, polling_base: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.steps = steps
        self.hang = hang
        self.max_active = max_active
        self.credits = credits
        self.polling_base = polling_base
        self.tasks: dict[str, BflTask] = {}
        self.request_moderated = ["forbidden"]
        self.content_moderated = ["unsafe output"]
        self.error_prompts = ["explode"]
        self.expired = False
        self.submits = 0
        self.polls = 0
        self.polled_ids = 0
        self.max_recorded = 0  # 0: record every request; else keep only the last N (the bench)

    def expire(self) -> None:
        self.expired = True

    def active(self) -> int:
        return sum(1 for t in self.tasks.values() if t.status == "Pending")


def _auth(request: web.Request, state: BflState) -> web.Response | None:
    key = request.headers.get("x-key")
    if not key:
        return web.json_response({"detail": "Not authenticated"}, status=403)
    if key != state.api_key:
        return web.json_response({"detail": "Invalid API key"}, status=401)
    return None


def _invalid(loc: str, msg: str, kind: str = "value_error") -> web.Response:
    return web.json_response({"detail": [{"loc": ["body", loc], "msg": msg, "type": kind}]}, status=422)


def _validate(model: str, body: Any) -> web.Response | None:
    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
        return _invalid("prompt", "Field required", "missing")
    if model in ("flux-pro-1.1", "flux-dev", "flux-pro"):
        for side in ("width", "height"):
            v = body.get(side)
            if v is not None and (not isinstance(v, int) or v % 32 or not 256 <= v <= 1440):
                return _invalid(side, "Input should be a multiple of 32 between 256 and 1440")
        if "input_image" in body:
            return _invalid("input_image", "Extra inputs are not permitted", "extra_forbidden")
    if model.startswith("flux-kontext") or model.endswith("ultra"):
        if "width" in body or "height" in body:
            return _invalid("width", "Extra inputs are not permitted", "extra_forbidden")
    return None


def shape_of(body: dict[str, Any]) -> tuple[int, int]:
    if isinstance(body.get("width"), int) and isinstance(body.get("height"), int):
        return small(body["width"], body["height"])
    ratio = body.get("aspect_ratio")
    if isinstance(ratio, str) and ":" in ratio:
        w, h = ratio.split(":")
        return small(int(w) * 100, int(h) * 100)
    return small(1024, 768)


def build_app(state: BflState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 << 20)

    async def submit(request: web.Request) -> web.Response:
        denied = _auth(request, state)
        if denied:
            return denied
        model = request.match_info["model"]
        body = request["rec"].json
        bad = _validate(model, body)
        if bad:
            return bad
        if state.credits <= 0:
            return web.json_response({"detail": "Insufficient credits. Please add credits at bfl.ai."}, status=402)
        if state.active() >= state.max_active:
            return web.json_response({"detail": f"You have reached the maximum of {state.max_active} active "
                                                "tasks. Please wait for some to finish."}, status=429)
        state.credits -= 1
        state.submits += 1
        t = BflTask(uuid.uuid4().hex, model, body, request.headers["x-key"])
        prompt = body["prompt"].lower()
        if any(w in prompt for w in state.request_moderated):
            t.status = "Request Moderated"
        state.tasks[t.id] = t
        base = state.polling_base or f"{request.scheme}://{request.host}"
        return web.json_response({"id": t.id, "polling_url": f"{base}/v1/get_result?id={t.id}", "cost": 3.0,
                                  "input_mp": 0.0, "output_mp": 1.0})

    async def get_result(request: web.Request) -> web.Response:
        denied = _auth(request, state)
        if denied:
            return denied
        state.polls += 1
        state.polled_ids += 1
        if state.max_recorded and len(state.requests) > state.max_recorded:
            with state.lock:
                del state.requests[: len(state.requests) - state.max_recorded // 2]
        t = state.tasks.get(request.query.get("id", ""))
        if t is None:
            return web.json_response({"id": request.query.get("id", ""), "status": "Task not found", "result": None})
        t.polls += 1
        if t.status == "Pending" and not state.hang and t.polls > state.steps:
            prompt = t.body["prompt"].lower()
            if any(w in prompt for w in state.content_moderated):
                t.status = "Content Moderated"
            elif any(w in prompt for w in state.error_prompts):
                t.status = "Error"
            else:
                t.status = "Ready"
        out: dict[str, Any] = {"id": t.id, "status": t.status, "result": None, "progress": None}
        if t.status == "Pending":
            out["progress"] = min(t.polls - 1, state.steps) / (state.steps + 1)
        elif t.status == "Ready":
            fmt = "jpeg" if t.body.get("output_format") == "jpeg" else "png"
            out["result"] = {"sample": f"{request.scheme}://{request.host}/delivery/{t.id}.{fmt}",
                             "prompt": t.body["prompt"], "seed": t.body.get("seed", 1234),
                             "start_time": time.time() - 1, "end_time": time.time(), "duration": 1.0}
            out["progress"] = 1.0
        elif t.status in ("Request Moderated", "Content Moderated"):
            out["details"] = {"Moderation Reasons": ["Sexual"]}
        elif t.status == "Error":
            out["details"] = {"error": "Internal generation error"}
        return web.json_response(out)

    async def delivery(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        tid, _, ext = name.partition(".")
        t = state.tasks.get(tid)
        if t is None or state.expired:
            return web.Response(status=403, text="<Error><Code>AccessDenied</Code>Request has expired</Error>",
                                content_type="application/xml")
        w, h = shape_of(t.body)
        fmt = "JPEG" if ext == "jpeg" else "PNG"
        return web.Response(body=png(prompt_color(t.body["prompt"]), w, h, fmt), content_type=f"image/{ext}")

    app.router.add_get("/v1/get_result", get_result)
    app.router.add_post("/v1/{model}", submit)
    app.router.add_get("/delivery/{name}", delivery)
    return app


def start(state: BflState | None = None, port: int = 0, **options: Any) -> FakeServer:
    st = state if state is not None else BflState(**options)
    return FakeServer(build_app(st), st, port=port).start()
