"""Routes: the providers' built-in ones, then the YAML file's additions and overrides; aliases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.settings import ConfigError, Route
from ..prompt.limits import max_prompt_chars
from ..providers.base import RouteSpec
from .options import check_route
from .sections import parse_deployments

_ROUTE_KEYS = {"name", "provider", "upstream_model", "defaults", "aliases", "fallbacks", "description", "options",
               "deployments"}


def _from_spec(provider: str, spec: RouteSpec) -> Route:
    return Route(spec.name, provider, spec.upstream_model, dict(spec.defaults), tuple(spec.aliases), (),
                 dict(spec.options), spec.description)


def _from_yaml(item: Any, base: Mapping[str, Route], classes: Mapping[str, Any]) -> Route:
    if not isinstance(item, dict) or not item.get("name"):
        raise ConfigError(f"each route needs a name: {item!r}")
    name = str(item["name"])
    old = base.get(name)
    provider = str(item.get("provider") or (old.provider if old else ""))
    if provider not in classes:
        raise ConfigError(f"route {name}: unknown provider {provider!r}; known: {sorted(classes)}")
    options = dict(old.options) if old else {}
    options.update(item.get("options") or {})
    options.update({k: v for k, v in item.items() if k not in _ROUTE_KEYS})  # flat route options
    defaults = item.get("defaults", old.defaults if old else {})
    if not isinstance(defaults, dict):
        raise ConfigError(f"route {name}: defaults must be a mapping")
    return Route(
        name=name,
        provider=provider,
        upstream_model=str(item.get("upstream_model") or (old.upstream_model if old else name)),
        defaults=defaults,
        aliases=tuple(str(a) for a in item.get("aliases", old.aliases if old else ())),
        fallbacks=tuple(str(a) for a in item.get("fallbacks", old.fallbacks if old else ())),
        options=options,
        description=str(item.get("description", old.description if old else "")),
        deployments=parse_deployments(name, provider, item.get("deployments")) if "deployments" in item else (
            old.deployments if old else ()),
    )


def _finish(route: Route, path: Path | None, classes: Mapping[str, Any]) -> Route:
    """Options checked by the adapter and the prompt limit resolved once (a request compares a length)."""
    options = check_route(path, route, classes[route.provider])
    try:
        limit = max_prompt_chars(route.provider, route.upstream_model, options)
    except ValueError as e:
        raise ConfigError(f"route {route.name}: {e}") from None
    return dataclasses.replace(route, options=options, max_prompt_chars=limit)


def direct_route(path: Path | None, classes: Mapping[str, Any], provider: str, upstream: str) -> Route:
    """The route a `<provider>/<upstream model>` name stands for: the provider's defaults, checked as a
    configured route is (Config.resolve calls this through `make_direct`)."""
    route = Route(f"{provider}/{upstream}", provider, upstream, description=f"{provider} {upstream} (direct)",
                  direct=True)
    return _finish(route, path, classes)


def build_routes(doc: Mapping[str, Any], path: Path | None, classes: Mapping[str, Any]) -> dict[str, Route]:
    """Built-in routes of every provider (plugins included), then the file's routes over them."""
    routes = {spec.name: _from_spec(name, spec) for name, cls in classes.items() for spec in cls.builtin_routes}
    for item in doc.get("routes") or []:
        r = _from_yaml(item, routes, classes)
        routes[r.name] = r
    return {name: _finish(r, path, classes) for name, r in routes.items()}


def build_aliases(routes: Mapping[str, Route], doc: Mapping[str, Any]) -> dict[str, str]:
    aliases = {a: r.name for r in routes.values() for a in r.aliases}
    aliases.update({str(a): str(t) for a, t in (doc.get("aliases") or {}).items()})
    for a, target in aliases.items():
        if target not in routes:
            raise ConfigError(f"alias {a!r} points at unknown route {target!r}")
    return aliases


def check_fallbacks(routes: Mapping[str, Route], aliases: Mapping[str, str], default_fallbacks: tuple[str, ...],
                    default_model: str) -> None:
    if default_model not in routes and default_model not in aliases:
        raise ConfigError(f"DEFAULT_MODEL {default_model!r} is not a known route")
    for r in routes.values():
        for fb in (*r.fallbacks, *default_fallbacks):
            if fb not in routes and fb not in aliases:
                raise ConfigError(f"route {r.name}: fallback {fb!r} is not a known route")
