"""Typed provider and route options: validated when the configuration loads, typed for adapters.

A provider's YAML block (`providers.<name>.*`, and each deployment's options) is checked against
its adapter's `Options` plus the generic endpoint options (poll options, `rehost`); a route's
options against the generic route options (core/options.py) plus its adapter's `RouteOptions`.
An unknown key or a wrong type is a ConfigError naming the file, the route or provider, and the
key. Values from YAML or `${VAR}` expansion may be strings ("3", "false"); they are converted (not bool("false")), but
`concurrency: three` fails. The checked options stay a plain mapping of the keys that were set
(normalised values) for the generic readers; adapters read `ProviderBase.route_options(ctx)`.
"""

from __future__ import annotations

import re
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import msgspec

from ..core.options import EndpointOptions, GatewayRouteOptions
from ..errors import ConfigError
from .base import ProviderBase

S = TypeVar("S", bound=msgspec.Struct)
_YES, _NO = {"yes", "on"}, {"no", "off"}  # msgspec itself takes true/false/1/0 in lax mode
_BOOL_FIELDS: dict[type, frozenset[str]] = {}


def _takes_bool(tp: Any) -> bool:
    if tp is bool:
        return True
    return get_origin(tp) in (Union, types.UnionType) and bool in get_args(tp)


def _bool_fields(cls: type[msgspec.Struct]) -> frozenset[str]:
    out = _BOOL_FIELDS.get(cls)
    if out is None:
        out = _BOOL_FIELDS[cls] = frozenset(f.name for f in msgspec.structs.fields(cls) if _takes_bool(f.type))
    return out


def _lax(cls: type[msgspec.Struct], raw: Mapping[str, Any]) -> dict[str, Any]:
    """The mapping with "yes"/"on"/"no"/"off" read as booleans where the field takes one."""
    bools = _bool_fields(cls)
    out = dict(raw)
    for k in bools.intersection(out):
        v = out[k]
        if isinstance(v, str) and v.strip().lower() in _YES | _NO:
            out[k] = v.strip().lower() in _YES
    return out


def typed(cls: type[S], options: Mapping[str, Any]) -> S:
    """`options` as `cls`, ignoring keys that belong to other structs (a merged call mapping)."""
    names = cls.__struct_fields__
    return msgspec.convert(_lax(cls, {k: v for k, v in options.items() if k in names}), cls, strict=False)


def _check(cls: type[msgspec.Struct], raw: Mapping[str, Any], where: str, known: tuple[str, ...]) -> dict[str, Any]:
    """Validate `raw` against `cls`; return the keys that were set, with their converted values."""
    try:
        value = msgspec.convert(_lax(cls, raw), cls, strict=False)
    except msgspec.ValidationError as e:
        text = str(e)
        unknown = re.search(r"unknown field `([^`]*)`", text)
        if unknown:
            raise ConfigError(f"{where}: unknown option {unknown.group(1)!r}; known: {', '.join(sorted(known))}") \
                from None
        at = re.search(r"^(.*?) - at `\$\.([^`\[]+)", text)
        if at:
            key, why = at.group(2), at.group(1).replace(" | null", "")
            raise ConfigError(f"{where}: {key}: {why} (got {raw.get(key)!r})") from None
        raise ConfigError(f"{where}: {text}") from None
    return {k: getattr(value, k) for k in raw}


def _where(path: Path | None, what: str) -> str:
    return f"{path}: {what}" if path else what


def _split(raw: Mapping[str, Any], generic: type[msgspec.Struct]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = generic.__struct_fields__
    return ({k: v for k, v in raw.items() if k in names}, {k: v for k, v in raw.items() if k not in names})


def _both(generic: type[msgspec.Struct], own: type[msgspec.Struct], raw: Mapping[str, Any],
          where: str) -> dict[str, Any]:
    known = (*generic.__struct_fields__, *own.__struct_fields__)
    mine, rest = _split(raw, generic)
    return {**_check(generic, mine, where, known), **_check(own, rest, where, known)}


def provider_options(path: Path | None, name: str, cls: type[ProviderBase], raw: Mapping[str, Any]) -> dict[str, Any]:
    """A provider's options (`providers.<name>` less api_key/base_url/timeout_s/class), checked."""
    return _both(EndpointOptions, cls.Options, raw, _where(path, f"providers.{name}"))


def deployment_options(path: Path | None, route: str, label: str, cls: type[ProviderBase],
                       raw: Mapping[str, Any]) -> dict[str, Any]:
    return _both(EndpointOptions, cls.Options, raw, _where(path, f"route {route}: deployment {label}"))


def route_options(path: Path | None, route: Any, cls: type[ProviderBase]) -> dict[str, Any]:
    """A route's options (and its deployments'), checked; the checked mapping to keep on the route.

    `route` is a config Route (name, options, deployments)."""
    for d in route.deployments:
        deployment_options(path, route.name, d.label, cls, d.options)
    where = _where(path, f"route {route.name}")
    checked = _both(GatewayRouteOptions, cls.RouteOptions, route.options, where)
    try:
        return cls.check_route_options(checked, path.parent if path else Path.cwd())
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
