"""Fake OpenRouter chat-completions API for image-output models, on 127.0.0.1.

POST /api/v1/chat/completions with `Authorization: Bearer`, `modalities` and `image_config`
(openrouter.ai/docs/features/multimodal/image-generation): the answer's `choices[0].message.images[]` are
`{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}`, sized per `aspect_ratio` as the
docs' table says. Errors are OpenRouter's `{"error": {"code", "message", "metadata"}}` with the same HTTP
status (openrouter.ai/docs/api/reference/errors): a bad key 401, no credits 402, moderation 403 (metadata
reasons / flagged_input), rate limit 429 (Retry-After), model down 502; an unknown model is a 400.
A text-only model answers text and no images. `state.mode`: ok | error_in_200 (an error after the model
started: HTTP 200 with an `error` body) | content_filter (finish_reason content_filter, no image).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from .base import FakeServer, FakeState, Fault, recording_middleware
from .pictures import png_b64

IMAGE_MODELS = ("google/gemini-2.5-flash-image", "google/gemini-3-pro-image-preview", "black-forest-labs/flux.2-pro")
TEXT_MODELS = ("openai/gpt-4o-mini",)
SIZES = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
         "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
PATH = "/api/v1/chat/completions"


def or_error(code: int, message: str, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if metadata is not None:
        err["metadata"] = metadata
    return {"error": err}


def no_credits() -> Fault:
    return Fault(402, or_error(402, "Insufficient credits. Add more using https://openrouter.ai/credits"))


def flagged() -> Fault:
    return Fault(403, or_error(403, "google/gemini-2.5-flash-image requires moderation on Google. Your input was "
                                    "flagged for \"violence/graphic\".",
                               {"reasons": ["violence/graphic"], "flagged_input": "a gory...",
                                "provider_name": "Google", "model_slug": "google/gemini-2.5-flash-image"}))


def rate_limited(retry_after: str = "4") -> Fault:
    return Fault(429, or_error(429, "Rate limit exceeded: free-models-per-min."), headers={"Retry-After": retry_after})


def model_down() -> Fault:
    return Fault(502, or_error(502, "Provider returned error", {"provider_name": "Google", "raw": "upstream 500"}))


class OpenRouterState(FakeState):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "ok"

    def reset(self) -> None:
        self.clear()
        self.mode = "ok"


def _completion(model: str, message: dict[str, Any], finish: str = "stop", native: str = "STOP") -> dict[str, Any]:
    return {"id": "gen-fake-1", "provider": "Google", "model": model, "object": "chat.completion",
            "created": int(time.time()),
            "choices": [{"logprobs": None, "finish_reason": finish, "native_finish_reason": native, "index": 0,
                         "message": message}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 1290, "total_tokens": 1301}}


async def completions(request: web.Request) -> web.StreamResponse:
    st: OpenRouterState = request.app[STATE]
    auth = request.headers.get("Authorization", "")
    if auth != f"Bearer {st.api_key}":
        return web.json_response(or_error(401, "No auth credentials found" if not auth else "User not found."),
                                 status=401)
    body = request["rec"].json
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return web.json_response(or_error(400, "Input required: specify \"prompt\" or \"messages\""), status=400)
    model = body.get("model")
    if model not in IMAGE_MODELS + TEXT_MODELS:
        return web.json_response(or_error(400, f"{model} is not a valid model ID"), status=400)
    if model in TEXT_MODELS or "image" not in (body.get("modalities") or []):
        return web.json_response(_completion(model, {"role": "assistant", "content": "I can only write text."}))
    ratio = (body.get("image_config") or {}).get("aspect_ratio", "1:1")
    if ratio not in SIZES:
        return web.json_response(or_error(400, f"Invalid aspect_ratio: {ratio}"), status=400)
    if st.mode == "error_in_200":
        return web.json_response({"id": "gen-fake-2", **or_error(502, "Provider disconnected mid-generation")})
    if st.mode == "content_filter":
        return web.json_response(_completion(model, {"role": "assistant", "content": ""}, "content_filter",
                                             "IMAGE_SAFETY"))
    content = body["messages"][-1].get("content")
    text = content if isinstance(content, str) else \
        " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    refs = 0 if isinstance(content, str) else sum(1 for p in content if p.get("type") == "image_url")
    w, h = SIZES[ratio]
    url = "data:image/png;base64," + png_b64(f"{model}|{text}|{refs}", w, h)
    image = {"type": "image_url", "image_url": {"url": url}}
    return web.json_response(_completion(model, {"role": "assistant", "content": "Here you go!", "images": [image]}))


STATE: web.AppKey[OpenRouterState] = web.AppKey("fake_openrouter_state", OpenRouterState)


def start(api_key: str) -> FakeServer:
    state = OpenRouterState(api_key)
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 << 20)
    app[STATE] = state
    app.router.add_post(PATH, completions)
    return FakeServer(app, state).start()
