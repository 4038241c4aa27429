"""Admin endpoints, guarded by ADMIN_API_KEY (Bearer): config reload and deployment health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from ..core.settings import Config, ConfigError
from ..errors import AuthError, GatewayError
from ..runtime import Runtime
from ..schemas.responses import encode
from .auth import bearer, same_secret


def _admin(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    admin_key = rt.cfg.admin_key
    if not admin_key:
        raise GatewayError("The admin API is off: set ADMIN_API_KEY to use it.", status=403,
                           code="admin_disabled")
    token = bearer(request)
    if token is None or not same_secret(token, admin_key):
        raise AuthError("Invalid or missing admin key: send 'Authorization: Bearer <ADMIN_API_KEY>'.")
    return rt


async def reload(request: Request) -> Response:
    """POST /admin/reload: re-read the YAML file and .env, swap atomically, or say why not."""
    rt = _admin(request)
    reload_config: Callable[[str], Awaitable[Config]] = request.app.state.reload  # (injected by app.py)
    try:
        cfg = await reload_config("admin")
    except ConfigError as e:
        raise GatewayError(f"The new config was rejected; the running config is unchanged. {e}", status=400,
                           code="invalid_config") from None
    body = {"status": "reloaded", "generation": rt.generation, "config_file": str(cfg.config_path or ""),
            "routes": sorted(cfg.routes)}
    return Response(encode(body), media_type="application/json")


async def deployments(request: Request) -> Response:
    """GET /admin/deployments: every route's deployments, breaker state and load."""
    rt = _admin(request)
    router = rt.router
    now = asyncio.get_running_loop().time()
    routes: dict[str, list[dict[str, object]]] = {}
    for d in router.pool.all_deployments():
        routes.setdefault(d.route, []).append({
            "deployment": d.label, "provider": d.provider_name, "base_url": d.endpoint.settings.base_url,
            "inflight": d.endpoint.inflight, **d.health.snapshot(now)})
    body = {"generation": rt.generation, "inflight": router.inflight(), "routes": routes}
    return Response(encode(body), media_type="application/json")
