"""Liveness, readiness, and the images the gateway hosts itself."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from ..media.convert import CONTENT_TYPES
from ..runtime import Runtime
from ..schemas.responses import encode
from .errors import error_body


async def health(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    return Response(encode({"status": "ok", "instance": rt.cfg.instance}), media_type="application/json")


async def ready(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    usable = rt.usable_providers()
    status = 200 if usable else 503
    body = {"status": "ready" if usable else "no usable provider", "providers": usable}
    return Response(encode(body), status_code=status, media_type="application/json")


async def hosted_image(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    name = request.path_params["name"]
    path = rt.store.path(name)
    if path is None:
        return Response(error_body("Image not found or expired.", "invalid_request_error", "image_not_found"),
                        status_code=404, media_type="application/json")
    ext = name.rsplit(".", 1)[-1]
    return FileResponse(path, media_type=CONTENT_TYPES.get(ext, "application/octet-stream"),
                        headers={"Cache-Control": "public, max-age=3600, immutable"})
