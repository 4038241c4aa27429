"""What an Images API answer holds and where its URLs point (api/images.py, chat.py, tasks.py).

The form: the caller's `response_format`, always; without one, the route's
`default_response_format`, else DEFAULT_RESPONSE_FORMAT (shipped: `both`, url and b64_json in each
entry, so that every client reads one of them). Returned URLs are on the gateway's own origin
(PUBLIC_BASE_URL, else the request's): upstream URLs are downloaded and hosted unless the generic
`rehost` option (route › deployment › provider, core/options.py) is false.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..core.settings import Config, Route
from ..core.types import ImageRequest
from ..media.deliver import Delivery
from ..runtime import Runtime


def answer_format(cfg: Config, route: Route, req: ImageRequest) -> str:
    """What the answer holds: the caller's response_format › the route's default › the server's."""
    return req.response_format or route.options.get("default_response_format") or cfg.default_response_format


def rehosts(cfg: Config, route: Route, deployment: str | None = None) -> bool:
    """Whether upstream URLs are hosted on the gateway: the `rehost` option of the route, else of
    the deployment that served, else of its provider; on when none sets it (core/options.py)."""
    opt = route.options.get("rehost")
    if opt is None and deployment is not None and route.deployments:
        dep = next((d for d in route.deployments if d.label == deployment), None)
        opt = dep.options.get("rehost") if dep is not None else None
    if opt is None:
        provider = cfg.providers.get(route.provider)
        opt = provider.options.get("rehost") if provider is not None else None
    return opt is not False


def served_rehost(rt: Runtime, state: dict[str, Any], route: Route) -> bool:
    """`rehosts` for the route and deployment that actually served (a fallback's own option applies)."""
    served = rt.cfg.routes.get(state.get("route", ""), route)
    return rehosts(rt.cfg, served, state.get("deployment"))


def upstream_format(fmt: str, rehost: bool) -> str | None:
    """What to ask an upstream that takes response_format: base64 whenever the gateway needs the
    bytes anyway (to give base64, or to host the image), which saves downloading a URL answer."""
    if fmt == "native":
        return None
    return "url" if fmt == "url" and not rehost else "b64_json"


_BASES: dict[tuple[Any, ...], str] = {}


def base_url(rt: Runtime, request: Request) -> str:
    """PUBLIC_BASE_URL, else this request's base (cached per scheme, Host and root path: Starlette
    parses a URL each time, and `both` needs it on every request)."""
    if rt.cfg.public_base_url:
        return rt.cfg.public_base_url
    scope = request.scope
    host = next((v for k, v in scope["headers"] if k == b"host"), None)
    server = scope.get("server")  # (a tuple from uvicorn; some ASGI servers give a list)
    key = (scope.get("scheme"), host, tuple(server) if server else None, scope.get("root_path"))
    base = _BASES.get(key)
    if base is None:
        base = str(request.base_url).rstrip("/")
        if len(_BASES) < 256:  # callers choose the Host header: bounded
            _BASES[key] = base
    return base


def delivery_for(request: Request | str, rt: Runtime, req: ImageRequest, result_meta: dict[str, Any],
                 stream: bool = False, response_format: str = "both", rehost: bool = True) -> Delivery:
    """`request`: the request, or (for a task rendered after its request ended) the base URL it came in on."""
    native = result_meta.get("output_format")
    convert = req.output_format if req.output_format and native != req.output_format else None
    fmt = "b64_json" if stream else response_format
    base = ""
    if fmt != "b64_json":  # only answers with URLs need it
        base = request if isinstance(request, str) else base_url(rt, request)
    return Delivery(fmt, convert, req.output_compression if convert else None, base, rehost=rehost)
