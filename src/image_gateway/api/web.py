"""Pages served from the package: the OpenAPI document, Swagger UI at /docs, the playground at /.

Every asset is a file under `image_gateway/web/` named in `_ASSETS` (no path from the request ever
reaches the file system); Swagger UI is vendored there, so nothing is loaded from a CDN.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from . import openapi
from .errors import error_body

WEB = Path(__file__).resolve().parent.parent / "web"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8"}
_ASSETS = {name: WEB / name for name in (
    "playground.js", "playground.css", "swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css",
    "swagger-ui/LICENSE", "swagger-ui/NOTICE", "docs.js")}
# The pages load only their own scripts and styles; images may be data: or blob: URLs, or hosted ones.
_CSP = ("default-src 'self'; img-src 'self' data: blob: http: https:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
_PAGE_HEADERS = {"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache",
                 "Referrer-Policy": "no-referrer"}

_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Image AIGC Gateway – API docs</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/web/swagger-ui/swagger-ui.css"><link rel="icon" href="data:,"></head>
<body><p style="font:14px sans-serif;margin:8px 16px"><a href="/">Playground</a> ·
<a href="/openapi.json">openapi.json</a></p><div id="swagger-ui"></div>
<script src="/web/swagger-ui/swagger-ui-bundle.js"></script><script src="/web/docs.js"></script></body></html>
"""


async def openapi_json(request: Request) -> Response:
    return Response(openapi.document_bytes(), media_type="application/json", headers={"Cache-Control": "no-cache"})


async def docs(request: Request) -> Response:
    return Response(_DOCS_HTML, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


async def playground(request: Request) -> Response:
    return FileResponse(WEB / "playground.html", media_type=_TYPES[".html"], headers=_PAGE_HEADERS)


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    path = _ASSETS.get(name)
    if path is None:
        return Response(error_body(f"No asset '{name}'.", "invalid_request_error", "not_found"), status_code=404,
                        media_type="application/json")
    return FileResponse(path, media_type=_TYPES.get(path.suffix, "text/plain; charset=utf-8"),
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


ROUTES = [
    Route("/openapi.json", openapi_json, methods=["GET"]),
    Route("/docs", docs, methods=["GET"]),
    Route("/", playground, methods=["GET"]),
    Route("/playground", playground, methods=["GET"]),
    Route("/web/{name:path}", asset, methods=["GET"]),
]
