"""`check-config`: every setting of the table with its value (keys masked), then routes and policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.settings import Config
from ..errors import mask_key
from .table import SETTINGS


def _value(cfg: Config, field: str) -> Any:
    node: Any = cfg
    for part in field.split("."):
        node = getattr(node, part)
    return node


def _plain(value: Any) -> Any:
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    return value


def describe(cfg: Config) -> dict[str, Any]:
    """The resolved config with keys masked (`sk-...abcd`), settings named by their variable or YAML path."""
    settings: dict[str, Any] = {}
    for row in SETTINGS:
        if not row.field:
            continue
        value = _plain(_value(cfg, row.field))
        if row.type == "secret" or row.field == "gateway_keys":
            value = [mask_key(k) for k in value] if isinstance(value, list) else mask_key(value) if value else None
        settings[row.name] = value
    return {"config_file": str(cfg.config_path) if cfg.config_path else None, "settings": settings,
            **cfg.describe()}
