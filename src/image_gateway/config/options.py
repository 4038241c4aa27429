"""Where the loader checks provider and route options: the typed Structs are the adapters'
(providers/options.py); this module only decides which check a scope gets."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.settings import Route
from ..providers.base import ProviderBase
from ..providers.options import provider_options, route_options


def check_provider(path: Path | None, name: str, cls: type[ProviderBase], options: Mapping[str, Any]) -> dict[str, Any]:
    """`providers.<name>` options (api_key, base_url, timeout_s and class taken out), typed and checked."""
    return provider_options(path, name, cls, options)


def check_route(path: Path | None, route: Route, cls: type[ProviderBase]) -> dict[str, Any]:
    """A route's options (flat keys included) and its deployments', typed and checked."""
    return route_options(path, route, cls)
