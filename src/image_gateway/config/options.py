"""Where the loader checks provider and route options (the typed Structs are the adapters').

`validate_options` is called once per provider (its `providers.<name>` options) and once per route
(its options, flat keys included), at start-up, `check-config` and reload. It returns the options
to store, converted, or raises ConfigError naming `where` and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal


def validate_options(provider_cls: Any, scope: Literal["provider", "route"], where: str,
                     options: Mapping[str, Any]) -> Mapping[str, Any]:
    """Pass-through until each adapter declares `Options` / `RouteOptions` (arch-providers)."""
    return options
