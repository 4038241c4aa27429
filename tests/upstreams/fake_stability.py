"""Fake Stability AI Stable Image API (v2beta), as its reference describes it (docs/protocols.md §11,
"Stability AI"): multipart/form-data in, `Accept: application/json` → `{image, finish_reason, seed}`.

* POST /v2beta/stable-image/generate/{ultra,core,sd3}: `prompt` (required), `aspect_ratio` (enum),
  `output_format` (png/jpeg/webp), `seed` (0-4294967294, 0/absent: random), `negative_prompt`,
  `style_preset` (ultra/core), `model` (sd3 only: sd3.5-large, sd3.5-large-turbo, sd3.5-medium, ...).
  The image is a real one of one colour (from the prompt) at about 1 megapixel in the ratio asked.
* POST /v2beta/stable-image/edit/inpaint (`image`, `prompt`, optional `mask`, `grow_mask`) and
  /edit/search-and-replace (`image`, `prompt`, `search_prompt`): the image keeps the input's size.
* Errors are `{id, name, errors: [...]}`: 401 unauthorized, 400 bad_request, 403 content_moderation
  (prompt containing `moderation_word`), 402 payment_required (`mode = "credits"`), 429
  rate_limit_exceeded (`mode = "rate"`), 500 internal_error (`mode = "server"`); `mode = "filtered"`
  answers 200 with `finish_reason: CONTENT_FILTERED` (a blurred image).
"""

from __future__ import annotations

import base64
import io
import math
import random
import uuid

from aiohttp import web
from PIL import Image

from .base import FakeServer, FakeState, recording_middleware
from .pictures import digest_color

RATIOS = {"16:9": (16, 9), "1:1": (1, 1), "21:9": (21, 9), "2:3": (2, 3), "3:2": (3, 2), "4:5": (4, 5),
          "5:4": (5, 4), "9:16": (9, 16), "9:21": (9, 21)}
SD3_MODELS = {"sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium", "sd3.5-flash", "sd3-large", "sd3-large-turbo",
              "sd3-medium"}
FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


class StabilityState(FakeState):
    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "ok"
        self.moderation_word = "forbidden"

    def reset(self) -> None:
        self.clear()
        self.mode = "ok"


def dims(ratio: str) -> tuple[int, int]:
    """About one megapixel in `ratio`, sides multiples of 64 (what SD3 makes)."""
    w, h = RATIOS[ratio]
    side = math.sqrt(1024 * 1024 / (w * h))
    return max(64, round(w * side / 64) * 64), max(64, round(h * side / 64) * 64)


def encode(color: tuple[int, int, int], size: tuple[int, int], fmt: str) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, FORMATS[fmt])
    return base64.b64encode(buf.getvalue()).decode()


def _error(status: int, name: str, *errors: str) -> web.Response:
    return web.json_response({"id": uuid.uuid4().hex, "name": name, "errors": list(errors)}, status=status)


def build_app(state: StabilityState) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        rec = request["rec"]
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        if not token or token in state.bad_keys or (state.api_key is not None and token != state.api_key):
            return _error(401, "unauthorized", "authorization: invalid or missing header value")
        if not request.content_type.startswith("multipart/form-data"):
            return _error(400, "bad_request", "content-type: must be multipart/form-data")
        form = {k: v[0] for k, v in rec.form.items()}
        errors = []
        prompt = form.get("prompt", "")
        if not prompt.strip():
            errors.append("prompt: cannot be empty")
        fmt = form.get("output_format", "png")
        if fmt not in FORMATS:
            errors.append("output_format: must be one of png, jpeg, webp")
        seed = form.get("seed", "0")
        if not seed.isdigit() or int(seed) > 4294967294:
            errors.append("seed: must be a number between 0 and 4294967294")
        kind = request.match_info["kind"]
        edit = request.path.startswith("/v2beta/stable-image/edit/")
        if kind not in (("inpaint", "search-and-replace") if edit else ("ultra", "core", "sd3")):
            return _error(404, "not_found", f"{request.path}: not found")
        size: tuple[int, int] = (1024, 1024)
        if edit:
            if "image" not in rec.files:
                errors.append("image: required")
            else:
                with Image.open(io.BytesIO(rec.files["image"][0][2])) as img:
                    size = img.size
            if kind == "search-and-replace" and not form.get("search_prompt", "").strip():
                errors.append("search_prompt: cannot be empty")
        else:
            ratio = form.get("aspect_ratio", "1:1")
            if ratio not in RATIOS:
                errors.append(f"aspect_ratio: must be one of {', '.join(RATIOS)}")
            else:
                size = dims(ratio)
            if kind == "sd3" and form.get("model", "sd3.5-large") not in SD3_MODELS:
                errors.append("model: must be one of " + ", ".join(sorted(SD3_MODELS)))
            if kind != "sd3" and "model" in form:
                errors.append("model: unknown field")
        if errors:
            return _error(400, "bad_request", *errors)
        if state.moderation_word in prompt.lower():
            return _error(403, "content_moderation", "Your request was flagged by our content moderation system, "
                          "as a result your request was denied and you were not charged.")
        if state.mode == "credits":
            return _error(402, "payment_required", "You lack sufficient credits to make this request.  Please "
                          "purchase more credits at https://platform.stability.ai/account/credits and try again.")
        if state.mode == "rate":
            return web.json_response({"id": uuid.uuid4().hex, "name": "rate_limit_exceeded",
                                      "errors": ["You have exceeded the rate limit of 150 requests within a 10 "
                                                 "second period"]}, status=429, headers={"Retry-After": "7"})
        if state.mode == "server":
            return _error(500, "internal_error", "An unexpected server error has occurred, please try again "
                          "later.")
        used = int(seed) if seed != "0" else random.randrange(1, 4294967294)
        finish = "CONTENT_FILTERED" if state.mode == "filtered" else "SUCCESS"
        color = (128, 128, 128) if finish == "CONTENT_FILTERED" else digest_color(prompt + kind)
        if request.headers.get("Accept", "image/*") != "application/json":
            raw = base64.b64decode(encode(color, size, fmt))
            return web.Response(body=raw, content_type=f"image/{fmt}",
                                headers={"finish-reason": finish, "seed": str(used)})
        return web.json_response({"image": encode(color, size, fmt), "finish_reason": finish, "seed": used})

    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=12 << 20)
    app.router.add_post("/v2beta/stable-image/generate/{kind}", handle)
    app.router.add_post("/v2beta/stable-image/edit/{kind}", handle)
    return app


def start(state: StabilityState | None = None, port: int = 0) -> FakeServer:
    state = state if state is not None else StabilityState()
    return FakeServer(build_app(state), state, port).start()
