"""Fake Replicate HTTP API: `POST /v1/models/{owner}/{name}/predictions` (and `POST /v1/predictions` with a
`version`), `GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`; output files on `/delivery/...`.

`Authorization: Bearer <token>`; otherwise 401 problem+json `{"title": "Unauthenticated", "detail": ...,
"status": 401}`. A missing prompt → 422 `{"title": "Input validation failed", "detail": "- input: prompt is
required", "status": 422, "invalid_fields": [...]}`. `throttle_next` → 429 `{"detail": "Request was
throttled. Expected available in 3 seconds.", "status": 429}` with `Retry-After: 3`; `credit` at 0 → 402.
A prediction goes starting → processing (logs with "NN%") → succeeded after `steps` reads; with
`Prefer: wait=N` the create call answers the finished prediction when `sync` is set (a fast model).
Prompts holding "nsfw" fail with Replicate's safety-checker error text, "crash" with a model error.
`hang` keeps predictions processing. flux-schnell answers a list of URLs (num_outputs of them), others one URL.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import FakeServer, FakeState, recording_middleware
from .pictures import png, prompt_color, small

RATIOS = {"1:1": (1, 1), "16:9": (16, 9), "21:9": (21, 9), "3:2": (3, 2), "2:3": (2, 3), "4:5": (4, 5),
          "5:4": (5, 4), "3:4": (3, 4), "4:3": (4, 3), "9:16": (9, 16), "9:21": (9, 21)}


@dataclass
class Prediction:
    id: str
    model: str
    input: dict[str, Any]
    reads: int = 0
    status: str = "starting"
    created: float = 0.0


class ReplicateState(FakeState):
    def __init__(self, token: str = "r8_test", steps: int = 2, sync: bool = False, hang: bool = False) -> None:
        super().__init__()
        self.token = token
        self.steps = steps
        self.sync = sync
        self.hang = hang
        self.preds: dict[str, Prediction] = {}
        self.throttle_next = 0
        self.credit = 10**9
        self.expired = False
        self.cancels = 0


def _problem(status: int, title: str, detail: str, **more: Any) -> web.Response:
    return web.json_response({"title": title, "detail": detail, "status": status, **more}, status=status,
                             content_type="application/problem+json")


def build_app(state: ReplicateState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 << 20)

    def base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def view(p: Prediction, request: web.Request) -> dict[str, Any]:
        out: Any = None
        if p.status == "succeeded":
            count = int(p.input.get("num_outputs") or 1)
            urls = [f"{base(request)}/delivery/{p.id}/out-{i}.webp" for i in range(count)]
            out = urls if p.model.endswith("flux-schnell") else urls[0]
        logs = "" if p.status == "starting" else f"{min(100, p.reads * 100 // (state.steps + 1))}%|####"
        error = None
        if p.status == "failed":
            error = ("NSFW content detected. Try running it again, or try a different prompt."
                     if "nsfw" in p.input["prompt"] else "CUDA out of memory")
        return {"id": p.id, "model": p.model, "version": "hidden", "input": p.input, "logs": logs, "output": out,
                "error": error, "status": p.status, "created_at": "2026-11-24T10:00:00Z",
                "urls": {"get": f"{base(request)}/v1/predictions/{p.id}",
                         "cancel": f"{base(request)}/v1/predictions/{p.id}/cancel",
                         "stream": f"{base(request)}/stream/{p.id}"}}

    def advance(p: Prediction) -> None:
        if p.status not in ("starting", "processing"):
            return
        p.reads += 1
        if state.hang:
            p.status = "processing"
            return
        if p.reads > state.steps:
            prompt = p.input["prompt"]
            p.status = "failed" if ("nsfw" in prompt or "crash" in prompt) else "succeeded"
        else:
            p.status = "processing"

    def authed(request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {state.token}":
            return _problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    async def create(request: web.Request) -> web.Response:
        denied = authed(request)
        if denied:
            return denied
        if state.throttle_next > 0:
            state.throttle_next -= 1
            return web.json_response({"detail": "Request was throttled. Expected available in 3 seconds.",
                                      "status": 429}, status=429, headers={"Retry-After": "3"})
        if state.credit <= 0:
            return _problem(402, "Insufficient credit", "You have insufficient credit to run this model. "
                                                       "Go to https://replicate.com/account/billing to buy more.")
        body = request["rec"].json or {}
        inp = body.get("input") if isinstance(body, dict) else None
        if not isinstance(inp, dict) or not isinstance(inp.get("prompt"), str):
            return _problem(422, "Input validation failed", "- input: prompt is required",
                            invalid_fields=[{"type": "required", "field": "input",
                                             "description": "prompt is required"}])
        ratio = inp.get("aspect_ratio")
        if ratio is not None and ratio not in RATIOS:
            return _problem(422, "Input validation failed", f"- input.aspect_ratio: must be one of {list(RATIOS)}",
                            invalid_fields=[{"type": "enum", "field": "input.aspect_ratio",
                                             "description": "must be one of the allowed values"}])
        state.credit -= 1
        model = request.match_info.get("model") or str(body.get("version"))
        if "owner" in request.match_info:
            model = f"{request.match_info['owner']}/{model}"
        p = Prediction(uuid.uuid4().hex[:20], model, inp, created=time.time())
        state.preds[p.id] = p
        if state.sync and "wait" in request.headers.get("Prefer", ""):
            while p.status in ("starting", "processing") and not state.hang:
                advance(p)
        return web.json_response(view(p, request), status=201)

    async def get(request: web.Request) -> web.Response:
        denied = authed(request)
        if denied:
            return denied
        p = state.preds.get(request.match_info["id"])
        if p is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        advance(p)
        return web.json_response(view(p, request))

    async def cancel(request: web.Request) -> web.Response:
        denied = authed(request)
        if denied:
            return denied
        p = state.preds.get(request.match_info["id"])
        if p is None:
            return _problem(404, "Not found", "The requested resource could not be found.")
        state.cancels += 1
        if p.status in ("starting", "processing"):
            p.status = "canceled"
        return web.json_response(view(p, request))

    async def delivery(request: web.Request) -> web.Response:
        p = state.preds.get(request.match_info["id"])
        if p is None or state.expired:
            return web.Response(status=404, text="Not found")
        rw, rh = RATIOS.get(str(p.input.get("aspect_ratio") or "1:1"), (1, 1))
        w, h = small(rw * 100, rh * 100)
        i = int(request.match_info["i"])
        return web.Response(body=png(prompt_color(p.input["prompt"], i), w, h), content_type="image/png")

    app.router.add_post("/v1/models/{owner}/{model}/predictions", create)
    app.router.add_post("/v1/predictions", create)
    app.router.add_get("/v1/predictions/{id}", get)
    app.router.add_post("/v1/predictions/{id}/cancel", cancel)
    app.router.add_get("/delivery/{id}/out-{i}.webp", delivery)
    return app


def start(state: ReplicateState | None = None, port: int = 0, **options: Any) -> FakeServer:
    st = state if state is not None else ReplicateState(**options)
    return FakeServer(build_app(st), st, port=port).start()
