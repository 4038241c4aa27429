"""GET /v1/models and /v1/models/{id}: the logical routes, owned_by = provider.

Each entry has OpenAI's four fields first, then `supported_endpoint_types` (new-api's extension:
Cherry Studio lists a model as a painting model when the first entry is "image-generation";
"openai" = the chat surface), then `capabilities`, this gateway's extension: what the route takes.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..core.settings import Route
from ..prompt.ratio import RATIOS, ratio_to_size
from ..runtime import Runtime
from ..schemas.responses import encode, model_object
from .auth import authenticate

ENDPOINT_TYPES = ("image-generation", "openai")
# Providers that take any WxH or a ratio (they map a size to their own terms): the ratios' sizes are
# suggestions, not a closed list.
_RATIO_SIZES = tuple(f"{w}x{h}" for w, h in (ratio_to_size(r, 1024) for r in RATIOS))


def describe(rt: Runtime, name: str, route: Route) -> dict[str, Any]:
    provider = rt.router.provider_of(route)
    caps = provider.capabilities
    fixed = caps.sizes_for(route.upstream_model)  # the pixel sizes the model takes, when it has a list
    entry = model_object(name, route.provider, rt.started)
    entry["supported_endpoint_types"] = list(ENDPOINT_TYPES)
    entry["capabilities"] = {
        "generations": True, "edits": caps.edits, "variations": caps.variations, "masks": caps.masks,
        "chat": True,
        "stream": True,  # every route streams: natively, or as progress then the image (api/images.py)
        "partial_images": caps.native_stream or route.provider == "midjourney",
        "async": True, "max_n": caps.max_n,
        "sizes": list(fixed) if fixed else ["auto", *_RATIO_SIZES], "custom_sizes": not fixed,
        "response_formats": ["url", "b64_json"],
    }
    return entry


async def list_models(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    authenticate(request, rt.cfg)
    data = [describe(rt, r.name, r) for r in rt.cfg.routes.values()]
    return Response(encode({"object": "list", "data": data}), media_type="application/json")


async def get_model(request: Request) -> Response:
    rt: Runtime = request.app.state.rt
    authenticate(request, rt.cfg)
    name = request.path_params["model"]
    route = rt.router.resolve(name)
    return Response(encode(describe(rt, name, route)), media_type="application/json")
