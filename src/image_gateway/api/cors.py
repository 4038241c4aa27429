"""Starlette's CORS middleware, with a refused preflight answered in OpenAI's error shape like every
other 4xx (Starlette answers it with a plain-text body)."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response

from .errors import error_body


class CORS(CORSMiddleware):
    def preflight_response(self, request_headers: Headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code < 400:
            return answer
        # Keep the Access-Control-* headers; drop the plain-text content-type and length.
        headers = {k: v for k, v in answer.headers.items() if k.lower().startswith("access-control-")}
        text = bytes(answer.body).decode("latin-1")  # "Disallowed CORS origin, method"
        return Response(error_body(f"{text}.", "invalid_request_error", "cors_preflight_rejected"),
                        status_code=answer.status_code, headers=headers, media_type="application/json")
