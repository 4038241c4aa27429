"""Fake Gemini API (generativelanguage.googleapis.com) for image models, on 127.0.0.1.

POST /v1beta/models/{model}:generateContent (Gemini image models) and /v1beta/models/{model}:predict
(Imagen), key in `x-goog-api-key`. Answers as the real API does (ai.google.dev/gemini-api/docs/image-generation,
/imagen): `candidates[0].content.parts[]` with camelCase `inlineData {mimeType, data}` (and, for
gemini-3-pro, a `thought: true` draft image and a text part before the final image), `usageMetadata`;
Imagen `predictions[] {bytesBase64Encoded, mimeType}`. Real PNGs sized as the API's ratio tables say.

Errors are Google's `{"error": {"code", "message", "status", "details"}}`: no key 403 PERMISSION_DENIED,
a wrong key 400 INVALID_ARGUMENT with ErrorInfo reason API_KEY_INVALID, an unknown model 404 NOT_FOUND,
bad parameters 400 INVALID_ARGUMENT. `state.mode`: ok | block_prompt (promptFeedback.blockReason) |
finish_safety (finishReason IMAGE_SAFETY, no image) | text_only (a text part and no image) |
imagen_filtered (every sample filtered: `{}`) | imagen_partial (one sample has raiFilteredReason).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from .base import FakeServer, FakeState, Fault, recording_middleware
from .pictures import png_b64

GEMINI_MODELS = ("gemini-2.5-flash-image", "gemini-3-pro-image-preview")
IMAGEN_MODELS = ("imagen-4.0-generate-001", "imagen-4.0-fast-generate-001", "imagen-4.0-ultra-generate-001")
GEMINI_1K = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "3:4": (864, 1184), "4:3": (1184, 864),
             "4:5": (896, 1152), "5:4": (1152, 896), "9:16": (768, 1344), "16:9": (1344, 768), "21:9": (1536, 672)}
IMAGEN_1K = {"1:1": (1024, 1024), "3:4": (896, 1280), "4:3": (1280, 896), "9:16": (768, 1408), "16:9": (1408, 768)}
TIER = {"1K": 1, "2K": 2, "4K": 4}


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        err["details"] = details
    return {"error": err}


def quota_exhausted(retry_s: int = 7) -> Fault:
    """429 RESOURCE_EXHAUSTED with RetryInfo, as the free tier answers."""
    return Fault(429, google_error(429, "RESOURCE_EXHAUSTED",
                                   "You exceeded your current quota, please check your plan and billing details.",
                                   [{"@type": "type.googleapis.com/google.rpc.RetryInfo",
                                     "retryDelay": f"{retry_s}s"}]))


def internal() -> Fault:
    return Fault(500, google_error(500, "INTERNAL", "An internal error has occurred. Please retry or report."))


def unavailable() -> Fault:
    return Fault(503, google_error(503, "UNAVAILABLE", "The model is overloaded. Please try again later."))


class GoogleState(FakeState):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "ok"

    def reset(self) -> None:
        self.clear()
        self.mode = "ok"


class _Bad(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.body = status, body


def _invalid(message: str) -> _Bad:
    return _Bad(400, google_error(400, "INVALID_ARGUMENT", message))


class _Handlers:
    def __init__(self, state: GoogleState) -> None:
        self.state = state

    def _auth(self, request: web.Request) -> None:
        key = request.headers.get("x-goog-api-key") or request.query.get("key")
        if not key:
            raise _Bad(403, google_error(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers "
                                         "(callers without established identity). Please use API Key or other "
                                         "form of API consumer identity to call this API."))
        if key != self.state.api_key:
            raise _Bad(400, google_error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.",
                                         [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                                           "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]))

    async def call(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["call"].partition(":")
        try:
            self._auth(request)
            body = request["rec"].json
            if not isinstance(body, dict):
                raise _invalid("Invalid JSON payload received.")
            if method == "generateContent" and model in GEMINI_MODELS:
                return web.json_response(self._gemini(model, body))
            if method == "predict" and model in IMAGEN_MODELS:
                return web.json_response(self._imagen(model, body))
            raise _Bad(404, google_error(404, "NOT_FOUND", f"models/{model} is not found for API version v1beta, "
                                         f"or is not supported for {method}. Call ListModels to see the list of "
                                         "available models and their supported methods."))
        except _Bad as e:
            return web.json_response(e.body, status=e.status)

    def _gemini(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        contents = body.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("* GenerateContentRequest.contents: contents is not specified")
        parts = contents[-1].get("parts") or []
        prompt = " ".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        inputs = [p for p in parts if "inline_data" in p or "inlineData" in p]
        config = body.get("generationConfig") or {}
        modalities = [m.upper() for m in config.get("responseModalities") or ["TEXT"]]
        if "IMAGE" not in modalities:
            return self._text_answer(model, "I can only describe the image in text.")
        image_config = config.get("imageConfig") or {}
        ratio = image_config.get("aspectRatio", "1:1")
        if ratio not in GEMINI_1K:
            raise _invalid(f"* GenerateContentRequest.generation_config.image_config.aspect_ratio: unsupported "
                           f"aspect ratio {ratio}")
        size = image_config.get("imageSize", "1K")
        if "imageSize" in image_config and (not model.startswith("gemini-3") or size not in TIER):
            raise _invalid("* GenerateContentRequest.generation_config.image_config.image_size: unsupported")
        w, h = (side * TIER[size] for side in GEMINI_1K[ratio])
        if self.state.mode == "block_prompt":
            return {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
                    "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": model}
        if self.state.mode == "finish_safety":
            return {"candidates": [{"content": {"role": "model"}, "finishReason": "IMAGE_SAFETY", "index": 0}],
                    "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": model}
        if self.state.mode == "text_only":
            return self._text_answer(model, "I can't create that image, but here is a description instead.")
        seed = f"{model}|{prompt}|{len(inputs)}"
        out: list[dict[str, Any]] = []
        if model.startswith("gemini-3"):  # the pro model thinks in draft images first
            draft = png_b64("draft" + seed, 32, 32)
            out.append({"inlineData": {"mimeType": "image/png", "data": draft}, "thought": True})
        out.append({"text": "Here is the image you asked for."})
        out.append({"inlineData": {"mimeType": "image/png", "data": png_b64(seed, w, h)}})
        return {"candidates": [{"content": {"role": "model", "parts": out}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290, "totalTokenCount": 1302},
                "modelVersion": model, "responseId": "fake-" + hashlib.sha1(seed.encode()).hexdigest()[:12]}

    @staticmethod
    def _text_answer(model: str, text: str) -> dict[str, Any]:
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 12, "totalTokenCount": 21},
                "modelVersion": model}

    def _imagen(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances or not instances[0].get("prompt"):
            raise _invalid("Missing prompt in instances.")
        params = body.get("parameters") or {}
        n = params.get("sampleCount", 4)
        if not isinstance(n, int) or not 1 <= n <= 4:
            raise _invalid("Number of images must be between 1 and 4.")
        ratio = params.get("aspectRatio", "1:1")
        if ratio not in IMAGEN_1K:
            raise _invalid(f"Unsupported aspect ratio: {ratio}.")
        size = params.get("imageSize", "1K")
        if "imageSize" in params and ("fast" in model or size not in ("1K", "2K")):
            raise _invalid("imageSize is not supported for this model.")
        if self.state.mode == "imagen_filtered":
            return {}
        w, h = (side * TIER[size] for side in IMAGEN_1K[ratio])
        prompt = instances[0]["prompt"]
        preds: list[dict[str, Any]] = [{"bytesBase64Encoded": png_b64(f"{model}|{prompt}|{i}", w, h),
                                        "mimeType": "image/png"} for i in range(n)]
        if self.state.mode == "imagen_partial" and params.get("includeRaiReason"):
            preds[-1] = {"raiFilteredReason": "Unable to show generated images. All images were filtered out "
                                              "because they violated Vertex AI's usage guidelines."}
        return {"predictions": preds}


def build_app(state: GoogleState) -> web.Application:
    h = _Handlers(state)
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 << 20)
    app.router.add_post("/v1beta/models/{call}", h.call)
    return app


def start(api_key: str) -> FakeServer:
    state = GoogleState(api_key)
    return FakeServer(build_app(state), state).start()
