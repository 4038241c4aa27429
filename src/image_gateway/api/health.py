"""Liveness, readiness, metrics, and the images the gateway hosts itself.

/health and /ready are for load balancers and orchestrators, which send no key: they say only
up / ready or not. What is behind that (which providers are usable, every counter) is for
operators: /ready lists providers for the metrics or admin key, and /metrics needs one of those
keys whenever either is configured (unset, it is open, as for a scraper on a private network).
"""

from __future__ import annotations

import hmac

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from .. import metrics
from ..core.settings import Config
from ..errors import AuthError
from ..runtime import Runtime
from ..schemas.responses import encode
from .auth import bearer
from .errors import error_body

_READY = encode({"status": "ready"})
_NOT_READY = encode({"status": "not_ready"})


def _operator_keys(cfg: Config) -> list[str]:
    return [k for k in (cfg.metrics_key, cfg.admin_key) if k]


def _is_operator(request: Request, keys: list[str]) -> bool:
    token = bearer(request)
    return token is not None and any(hmac.compare_digest(token, k) for k in keys)


async def health(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    return Response(encode({"status": "ok", "instance": rt.cfg.instance}), media_type="application/json")


async def ready(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    usable = rt.usable_providers()
    store_ok = await rt.store.check()  # (IMAGE_STORE=s3: the bucket answers; local: always)
    fleet = rt.engine.fleet
    state_ok = fleet is None or await fleet.store.ping()  # shared state (REDIS_URL) answers
    ok = bool(usable) and store_ok and state_ok
    status = 200 if ok else 503
    keys = _operator_keys(rt.cfg)
    if keys and _is_operator(request, keys):
        out: dict[str, object] = {"status": "ready" if ok else "not_ready", "providers": usable,
                                  "unreachable": rt.router.unreachable_providers()}
        if rt.store.shared:
            out["image_store"] = {"kind": rt.cfg.image_store, "ok": store_ok}
        if fleet is not None:
            out["shared_state"] = "ok" if state_ok else "unavailable"
        body = encode(out)
    else:
        body = _READY if ok else _NOT_READY
    return Response(body, status_code=status, media_type="application/json")


async def metrics_page(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    keys = _operator_keys(rt.cfg)
    if keys and not _is_operator(request, keys):
        raise AuthError("Invalid or missing metrics key: send 'Authorization: Bearer <METRICS_API_KEY or "
                        "ADMIN_API_KEY>'.")
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def hosted_image(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    found = await rt.store.open(request.path_params["name"])  # (a bucket failure: 503/502, OpenAI-shaped)
    if found is None:
        return Response(error_body("Image not found or expired.", "invalid_request_error", "image_not_found"),
                        status_code=404, media_type="application/json")
    headers = {"Cache-Control": found.cache_control}
    if found.path is not None:
        return FileResponse(found.path, media_type=found.content_type, headers=headers)
    if found.size is not None:
        headers["Content-Length"] = str(found.size)
    assert found.chunks is not None
    return StreamingResponse(found.chunks, media_type=found.content_type, headers=headers)
