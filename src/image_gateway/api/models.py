"""GET /v1/models and /v1/models/{id}: the logical routes, owned_by = provider."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..runtime import Runtime
from ..schemas.responses import encode, model_object
from .auth import authenticate


async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    authenticate(request, rt.cfg)
    data = [model_object(r.name, r.provider, rt.started) for r in rt.cfg.routes.values()]
    return Response(encode({"object": "list", "data": data}), media_type="application/json")


async def get_model(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    authenticate(request, rt.cfg)
    name = request.path_params["model"]
    route = rt.router.resolve(name)
    return Response(encode(model_object(name, route.provider, rt.started)), media_type="application/json")
