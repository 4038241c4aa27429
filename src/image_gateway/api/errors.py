"""Every error leaves as OpenAI's shape with the right status."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import GatewayError
from ..schemas.responses import encode

_STATUS_TEXT = {404: ("Not found", "not_found"), 405: ("Method not allowed", "method_not_allowed")}


def error_response(err: GatewayError) -> Response:
    return JSONBytes(encode(err.body()), err.status, err.headers)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    return encode({"error": {"message": message, "type": type_, "param": param, "code": code}})


async def gateway_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    text, code = _STATUS_TEXT.get(exc.status_code, (str(exc.detail), None))
    if exc.status_code == 404:
        text = f"Unknown path {request.method} {request.url.path}"
    elif exc.status_code == 405:
        text = f"Method {request.method} is not allowed on {request.url.path}"
    return Response(error_body(text, "invalid_request_error", code), status_code=exc.status_code,
                    headers=exc.headers, media_type="application/json")


class JSONBytes(Response):
    """An already-encoded JSON body. Builds its header list directly (Starlette's generic
    Response.init_headers is measurable on the hot path)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        raw = [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
        if headers:
            raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        self.raw_headers = raw
