"""Fake 梦羽 AI (sd.exacg.cc) text-to-image API, as called by the seed project z-image-api.

POST /api/v1/generate_image (Bearer auth) answers
``{"success": true, "data": {"image_url", "image_id", "model_name", "points_used", "remaining_points"}}``
and serves a real PNG (colour derived from the prompt) at ``GET /img/<id>.png``.

``state.mode``:
ok            success
fail          400 {"success": false, "error": "积分不足"}
fail_message  500 {"success": false, "message": "服务器内部错误"}
challenge     403 text/html Cloudflare "Just a moment..." page
no_url        success true but ``data`` has no image_url
"""

from __future__ import annotations

import argparse
import io
import uuid

from aiohttp import web
from PIL import Image

from tests.upstreams.base import FakeServer, FakeState, recording_middleware, serve_forever
from tests.upstreams.pictures import digest_color

MODES = ("ok", "fail", "fail_message", "challenge", "no_url")
GENERATE_PATH = "/api/v1/generate_image"
PREVIEW_LONG_SIDE = 64  # the served PNG keeps the requested aspect but stays tiny

CHALLENGE_HTML = """<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title>
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8">
<meta name="robots" content="noindex,nofollow">
</head><body><div class="main-wrapper" role="main"><div class="main-content">
<h1 class="zone-name-title h1">sd.exacg.cc</h1><h2 class="h2" id="challenge-running">Checking if the site
connection is secure</h2><noscript>Enable JavaScript and cookies to continue</noscript></div></div>
<script>window._cf_chl_opt={cvId:'3',cType:'managed'};</script></body></html>"""


class SDState(FakeState):
    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "ok"
        self.points = 100
        self.images: dict[str, bytes] = {}
        self.error_message = "积分不足"
        self.fail_message = "服务器内部错误"

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.images.clear()
        self.delay_s = 0.0
        self.mode = "ok"
        self.points = 100


def make_png(prompt: str, width: int, height: int) -> bytes:
    w = max(1, min(width, 4096))
    h = max(1, min(height, 4096))
    scale = PREVIEW_LONG_SIDE / max(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    buf = io.BytesIO()
    Image.new("RGB", size, digest_color(prompt)).save(buf, format="PNG")
    return buf.getvalue()


def _fail(status: int, **body: object) -> web.Response:
    return web.json_response({"success": False, **body}, status=status)


def _int(value: object, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return int(value)
    return default


def build_app(state: SDState) -> web.Application:
    async def generate(request: web.Request) -> web.StreamResponse:
        if state.mode == "challenge":  # Cloudflare answers before the origin sees auth
            return web.Response(
                status=403,
                text=CHALLENGE_HTML,
                content_type="text/html",
                headers={"Server": "cloudflare", "cf-mitigated": "challenge", "Cache-Control": "no-store"},
            )
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not token or (state.api_key is not None and token != state.api_key):
            return _fail(401, error="API密钥无效")
        body = request["rec"].json
        if not isinstance(body, dict):
            return _fail(400, error="请求体必须是JSON")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return _fail(400, error="prompt不能为空")
        if state.mode == "fail":
            return _fail(400, error=state.error_message)
        if state.mode == "fail_message":
            return _fail(500, message=state.fail_message)

        image_id = uuid.uuid4().hex
        png = make_png(prompt, _int(body.get("width"), 1024), _int(body.get("height"), 1024))
        with state.lock:
            state.images[image_id] = png
            state.points -= 1
            remaining = state.points
        data: dict[str, object] = {
            "image_url": f"http://{request.host}/img/{image_id}.png",
            "image_id": image_id,
            "model_name": "Z-Image",
            "points_used": 1,
            "remaining_points": remaining,
        }
        if state.mode == "no_url":
            del data["image_url"]
        return web.json_response({"success": True, "data": data})

    async def image(request: web.Request) -> web.StreamResponse:
        png = state.images.get(request.match_info["image_id"])
        if png is None:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=png, content_type="image/png")

    app = web.Application(middlewares=[recording_middleware(state)])
    app.router.add_post(GENERATE_PATH, generate)
    app.router.add_get("/img/{image_id}.png", image)
    return app


def start(state: SDState | None = None, port: int = 0) -> FakeServer:
    """Start the fake on 127.0.0.1 in a background thread; ``server.url`` is the base URL."""
    state = state if state is not None else SDState()
    return FakeServer(build_app(state), state, port).start()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake sd.exacg.cc (梦羽 AI) image API")
    parser.add_argument("--port", type=int, default=9102)
    parser.add_argument("--mode", choices=MODES, default="ok")
    parser.add_argument("--api-key", default=None, help="require exactly this Bearer token")
    args = parser.parse_args()
    state = SDState(args.api_key)
    state.mode = args.mode
    serve_forever(build_app(state), args.port)


if __name__ == "__main__":
    main()
