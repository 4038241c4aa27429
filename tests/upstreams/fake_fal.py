"""Fake fal queue (queue.fal.run): `POST /{model path}` → `{request_id, response_url, status_url, cancel_url,
queue_position}`, `GET .../requests/{id}/status[?logs=1]`, `GET .../requests/{id}`, `PUT .../requests/{id}/cancel`.

As fal does, the status/response/cancel URLs drop the model's subpath: a submit to `fal-ai/flux/dev` is
polled on `fal-ai/flux/requests/<id>/status` (the owner and the first path segment). `Authorization:
Key <key>`, else 401 `{"detail": "Unauthorized"}`. A body without a prompt → 422 FastAPI
`{"detail": [{loc, msg, type}]}`. A request is IN_QUEUE (queue_position counting down) for `queued` polls,
IN_PROGRESS (logs with "NN%") for `steps` polls, then COMPLETED; its response is `{images: [{url,
content_type, width, height}], seed, has_nsfw_concepts, prompt}` with `num_images` images on `/files/...`.
A prompt holding "blocked" completes with a 422 content_policy_violation response, "nsfw" with every
`has_nsfw_concepts` true, "broken" with a COMPLETED status carrying an `error`. `hang` keeps requests IN_PROGRESS.
Cancel: 202 `{"status": "CANCELLATION_REQUESTED"}` while queued or running, 400 `ALREADY_COMPLETED` after.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from .base import FakeServer, FakeState, recording_middleware
from .pictures import png, prompt_color, small

NAMED = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
         "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}


@dataclass
class FalRequest:
    id: str
    app: str  # owner/name: where the request's URLs live
    model: str
    body: dict[str, Any]
    polls: int = 0
    status: str = "IN_QUEUE"
    cancelled: bool = False


class FalState(FakeState):
    def __init__(self, key: str = "fal-test", queued: int = 1, steps: int = 2, hang: bool = False) -> None:
        super().__init__()
        self.key = key
        self.queued = queued
        self.steps = steps
        self.hang = hang
        self.reqs: dict[str, FalRequest] = {}
        self.expired = False
        self.cancels = 0


def size_of(body: dict[str, Any]) -> tuple[int, int]:
    size = body.get("image_size", "landscape_4_3")
    if isinstance(size, dict):
        return int(size["width"]), int(size["height"])
    return NAMED.get(str(size), (1024, 768))


def build_app(state: FalState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 << 20)

    def base(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def authed(request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Key {state.key}":
            return web.json_response({"detail": "Unauthorized"}, status=401)
        return None

    def advance(r: FalRequest) -> None:
        r.polls += 1
        if r.cancelled:
            return
        if r.polls > state.queued:
            r.status = "IN_PROGRESS"
        if r.polls > state.queued + state.steps and not state.hang:
            r.status = "COMPLETED"

    async def submit(request: web.Request) -> web.Response:
        denied = authed(request)
        if denied:
            return denied
        path = request.match_info["path"]
        body = request["rec"].json
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return web.json_response({"detail": [{"loc": ["body", "prompt"], "msg": "field required",
                                                  "type": "value_error.missing"}]}, status=422)
        parts = path.split("/")
        r = FalRequest(uuid.uuid4().hex, "/".join(parts[:2]), path, body)
        state.reqs[r.id] = r
        at = f"{base(request)}/{r.app}/requests/{r.id}"
        return web.json_response({"request_id": r.id, "response_url": at, "status_url": f"{at}/status",
                                  "cancel_url": f"{at}/cancel", "queue_position": state.queued})

    def find(request: web.Request) -> FalRequest | None:
        r = state.reqs.get(request.match_info["id"])
        return r if r is not None and r.app == f"{request.match_info['owner']}/{request.match_info['name']}" else None

    def found(request: web.Request) -> FalRequest | web.Response:
        """The request a status/response/cancel URL names, or the answer fal gives instead (401, 404)."""
        denied = authed(request)
        if denied:
            return denied
        r = find(request)
        return r if r is not None else web.json_response({"detail": "Request not found"}, status=404)

    async def status(request: web.Request) -> web.Response:
        r = found(request)
        if isinstance(r, web.Response):
            return r
        advance(r)
        out: dict[str, Any] = {"status": r.status, "request_id": r.id, "response_url":
                               f"{base(request)}/{r.app}/requests/{r.id}"}
        if r.status == "IN_QUEUE":
            out["queue_position"] = max(0, state.queued - r.polls)
        elif request.query.get("logs") == "1":
            done = min(100, (r.polls - state.queued) * 100 // (state.steps + 1))
            out["logs"] = [{"message": f"{done}%|#### step", "level": "INFO", "timestamp": "2026-11-24T10:00:00"}]
        if r.status == "COMPLETED":
            out["metrics"] = {"inference_time": 1.2}
            if "broken" in r.body["prompt"]:
                out["error"], out["error_type"] = "Runner crashed while processing the request", "runner_error"
        return web.json_response(out, status=200 if r.status == "COMPLETED" else 202)

    async def response(request: web.Request) -> web.Response:
        r = found(request)
        if isinstance(r, web.Response):
            return r
        if r.status != "COMPLETED":
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        prompt = r.body["prompt"]
        if "blocked" in prompt:
            return web.json_response({"detail": [{"loc": ["body", "prompt"], "msg": "The content was flagged",
                                                  "type": "content_policy_violation"}]}, status=422)
        n = int(r.body.get("num_images") or 1)
        w, h = size_of(r.body)
        images = [{"url": f"{base(request)}/files/{r.id}-{i}.png", "content_type": "image/png", "width": w,
                   "height": h} for i in range(n)]
        return web.json_response({"images": images, "seed": 42, "prompt": prompt, "timings": {"inference": 1.0},
                                  "has_nsfw_concepts": [("nsfw" in prompt)] * n})

    async def cancel(request: web.Request) -> web.Response:
        r = found(request)
        if isinstance(r, web.Response):
            return r
        state.cancels += 1
        if r.status == "COMPLETED":
            return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
        r.cancelled = True
        return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)

    async def files(request: web.Request) -> web.Response:
        rid, _, rest = request.match_info["name"].rpartition("-")
        r = state.reqs.get(rid)
        if r is None or state.expired:
            return web.Response(status=404, text="Not found")
        w, h = small(*size_of(r.body))
        return web.Response(body=png(prompt_color(r.body["prompt"], int(rest.split(".")[0])), w, h),
                            content_type="image/png")

    app.router.add_get("/files/{name}", files)
    app.router.add_get("/{owner}/{name}/requests/{id}/status", status)
    app.router.add_put("/{owner}/{name}/requests/{id}/cancel", cancel)
    app.router.add_get("/{owner}/{name}/requests/{id}", response)
    app.router.add_post("/{path:.+}", submit)
    return app


def start(state: FalState | None = None, port: int = 0, **options: Any) -> FakeServer:
    st = state if state is not None else FalState(**options)
    return FakeServer(build_app(st), st, port=port).start()
