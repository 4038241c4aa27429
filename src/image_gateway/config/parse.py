"""The casts every setting goes through: one `${VAR}` expansion, one bool reading, strict numbers.

Each cast raises ConfigError naming where the value came from (a variable or a YAML path).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.settings import ConfigError, truthy

REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_ref(raw: Any) -> bool:
    """A whole-value `${VAR}` reference: the only way a key may appear in the YAML file."""
    return REF.fullmatch(str(raw)) is not None


def expand(value: Any, env: Mapping[str, str]) -> Any:
    """`${VAR}` replaced by the variable (empty when unset), through nested mappings and lists."""
    if isinstance(value, str):
        return REF.sub(lambda m: env.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [expand(v, env) for v in value]
    return value


def as_bool(raw: Any, where: str) -> bool:
    on = truthy(raw)
    if on is None:
        raise ConfigError(f"{where}: {raw!r} is not a valid bool (use true/false, 1/0, yes/no, on/off)")
    return on


def as_float(raw: Any, where: str) -> float:
    if not isinstance(raw, bool):
        try:
            return float(raw)
        except (TypeError, ValueError):
            pass
    raise ConfigError(f"{where} must be a number, got {raw!r}")


def as_int(raw: Any, where: str) -> int:
    if not isinstance(raw, bool):
        try:
            return int(raw)
        except (TypeError, ValueError):
            try:  # "5e7" and "600.0" are whole numbers too
                f = float(raw)
            except (TypeError, ValueError):
                f = 0.5
            if f.is_integer():
                return int(f)
    raise ConfigError(f"{where} must be an integer, got {raw!r}")


def as_list(raw: Any, where: str) -> tuple[str, ...]:
    """A comma-separated string (the environment) or a YAML list."""
    if isinstance(raw, str):
        return tuple(x.strip() for x in raw.split(",") if x.strip())
    if isinstance(raw, list | tuple):
        return tuple(str(x) for x in raw)
    raise ConfigError(f"{where} must be a list or a comma-separated string, got {raw!r}")


def as_str(raw: Any, where: str) -> str:
    if isinstance(raw, dict | list):
        raise ConfigError(f"{where} must be a string, got {raw!r}")
    return str(raw)


RESPONSE_FORMATS = ("both", "url", "b64_json", "native")


def as_response_format(raw: Any, where: str) -> str:
    value = as_str(raw, where).strip()
    if value not in RESPONSE_FORMATS:
        raise ConfigError(f"{where} must be one of {', '.join(RESPONSE_FORMATS)}, got {raw!r}")
    return value


CASTS: dict[str, Any] = {
    "str": as_str, "secret": as_str, "int": as_int, "float": as_float, "bool": as_bool, "list": as_list,
    "url": lambda raw, where: as_str(raw, where).rstrip("/"),
    "path": lambda raw, where: Path(as_str(raw, where)),
    "upper": lambda raw, where: as_str(raw, where).upper(),
    "response_format": as_response_format,
}


def cast(kind: str, raw: Any, where: str) -> Any:
    return CASTS[kind](raw, where)
