"""Settings: environment > .env file > YAML file > built-in defaults.

Keys and addresses come from the environment (or `.env`); routes and policy from the optional
YAML file. A key may appear in YAML only as a `${VAR}` reference so the file can be shared.
The result is an immutable snapshot (core/settings.py); hot reload builds a new one and swaps it
whole. Scalar settings are read row by row from the table (config/table.py).
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from ..core.settings import Config, ConfigError, EnhanceSettings, ProviderSettings, RouterSettings
from ..media.egress import parse_allowlist
from ..providers.registry import provider_classes
from .options import check_provider
from .parse import cast, expand
from .routes import build_aliases, build_routes, check_fallbacks, direct_route
from .sections import check_key_refs, parse_limits
from .table import SETTINGS, Setting, provider_settings

_SECTIONS = ("providers", "routes", "aliases", "default_fallbacks", "router", "server", "images", "enhance",
             "limits", "state")
_UNSET: Any = object()


def merged_env(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> dict[str, str]:
    """Environment over `.env` (the file only fills what the environment leaves unset)."""
    env: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def read_yaml(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping at the top level")
    unknown = set(data) - set(_SECTIONS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {sorted(unknown)}; known: {sorted(_SECTIONS)}")
    check_key_refs(data)
    return expand(data, env)  # type: ignore[no-any-return]


def _yaml_at(doc: Mapping[str, Any], dotted: str) -> Any:
    node: Any = doc
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return _UNSET
        node = node[part]
    return _UNSET if node is None or node == "" or node == [] else node


def read(row: Setting, env: Mapping[str, str], doc: Mapping[str, Any]) -> Any:
    """One setting: its variable, else its YAML path, else its default; cast, or a ConfigError naming it."""
    for var in (row.env, *row.aliases) if row.env else ():
        raw = env.get(var)
        if raw is not None and (raw != "" or row.empty_counts):
            return cast(row.type, raw, var)
    raw = _yaml_at(doc, row.yaml) if row.yaml else _UNSET
    if raw is not _UNSET:
        return cast(row.type, raw, row.yaml or "")
    return row.value_default


def _check_keys(doc: Mapping[str, Any], rows: Iterable[Setting]) -> None:
    """server/images/enhance/router take only the keys the table names (a typo is an error, not ignored)."""
    known: dict[str, set[str]] = {}
    for row in rows:
        if row.yaml:
            section, _, key = row.yaml.partition(".")
            known.setdefault(section, set()).add(key)
    for section, keys in known.items():
        given = doc.get(section)
        if given is None:
            continue
        if not isinstance(given, Mapping):
            raise ConfigError(f"{section} must be a mapping")
        unknown = set(given) - keys
        if unknown:
            raise ConfigError(f"{section}: unknown key(s) {sorted(unknown)}; known: {sorted(keys)}")


def _providers(env: Mapping[str, str], doc: Mapping[str, Any], path: Path | None,
               classes: Mapping[str, Any]) -> dict[str, ProviderSettings]:
    given = doc.get("providers") or {}
    unknown = set(given) - set(classes)
    if unknown:
        raise ConfigError(f"unknown provider(s) {sorted(unknown)}; known: {sorted(classes)}")
    out: dict[str, ProviderSettings] = {}
    for name, cls in classes.items():
        rows = provider_settings(name, cls)
        key, base_url, timeout = (read(r, env, doc) for r in rows[:3])
        options = {k: v for k, v in (given.get(name) or {}).items()
                   if k not in ("api_key", "base_url", "timeout_s", "class")}
        for row in rows[3:]:  # options from the environment, where YAML did not set them
            value = read(row, env, doc)
            if value is not None and row.field not in options:
                options[row.field] = value
        out[name] = ProviderSettings(name, base_url.rstrip("/"), key or None, timeout,
                                     check_provider(path, name, cls, options), cls)
    return out


def _scalars(env: Mapping[str, str], doc: Mapping[str, Any]) -> dict[str, Any]:
    """Every table row that is a Config field, by field name ("enhance.model" kept dotted)."""
    values = {row.field: read(row, env, doc) for row in SETTINGS if row.field}
    extra = read(next(r for r in SETTINGS if r.env == "GATEWAY_API_KEY"), env, doc)
    values["gateway_keys"] = frozenset({*values["gateway_keys"], *([extra.strip()] if extra else [])})
    if values["task_owner_secret"] is not None and len(values["task_owner_secret"]) < 16:
        raise ConfigError("TASK_OWNER_SECRET must be at least 16 characters (it keys the task owners' fingerprints)")
    try:
        values["private_url_allowlist"] = parse_allowlist(values["private_url_allowlist"])
    except ValueError as e:
        raise ConfigError(f"PRIVATE_URL_ALLOWLIST: {e}") from None
    values["public_base_url"] = values["public_base_url"] or None
    values["instance"] = values["instance"] or f"{socket.gethostname()}:{os.getpid()}"
    if values["header_timeout_s"] < 0 or values["max_connections"] < 1:
        raise ConfigError("HEADER_TIMEOUT_S must be >= 0 (0 = off) and MAX_CONNECTIONS >= 1")
    _check_state(values)
    for secret in ("admin_key", "metrics_key", "webhook_secret", "enhance.api_key"):
        values[secret] = values[secret] or None
    return values


def _check_state(values: dict[str, Any]) -> None:
    """REDIS_URL, TASK_LEASE_S and the image store: checked here, so a typo fails at load, not at the first request."""
    url = values["redis_url"] or None
    if url is not None and not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("REDIS_URL must start with redis://, rediss:// or unix://")
    values["redis_url"] = url
    if values["task_lease_s"] <= 0:
        raise ConfigError("TASK_LEASE_S must be > 0")
    store = str(values["image_store"]).strip().lower()
    if store not in ("local", "s3"):
        raise ConfigError(f"IMAGE_STORE must be local or s3, got {values['image_store']!r}")
    values["image_store"] = store
    if store == "s3" and not values["s3_bucket"]:
        raise ConfigError("IMAGE_STORE=s3 needs S3_BUCKET")
    for name in ("s3_bucket", "s3_endpoint_url", "s3_region", "s3_public_base_url"):
        values[name] = values[name] or None
    if values["s3_public_base_url"]:
        values["s3_public_base_url"] = values["s3_public_base_url"].rstrip("/")


def _nest(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted fields into their section's settings: {"enhance.model": m} -> enhance=EnhanceSettings(model=m)."""
    sections: dict[str, dict[str, Any]] = {}
    flat = {}
    for name, value in values.items():
        owner, _, attr = name.rpartition(".")
        if owner:
            sections.setdefault(owner, {})[attr] = value
        else:
            flat[name] = value
    return {**flat, "enhance": EnhanceSettings(**sections["enhance"]), "router": RouterSettings(**sections["router"])}


def load_config(environ: Mapping[str, str] | None = None, config_path: str | Path | None = None,
                env_file: str | Path | None = ".env") -> Config:
    """Build a validated snapshot. Raises ConfigError with a message that names the problem."""
    env = merged_env(environ, env_file)
    path_str = config_path or env.get("GATEWAY_CONFIG")
    path = Path(path_str) if path_str else None
    doc = read_yaml(path, env) if path else {}
    _check_keys(doc, SETTINGS)
    values = _nest(_scalars(env, doc))
    classes = provider_classes(doc.get("providers") or {}, str(path or ""))  # built-ins + `class:` plugins
    routes = build_routes(doc, path, classes)
    aliases = build_aliases(routes, doc)
    default_fallbacks = tuple(str(x) for x in doc.get("default_fallbacks") or ())
    check_fallbacks(routes, aliases, default_fallbacks, values["default_model"])
    return Config(**values, providers=_providers(env, doc, path, classes), routes=routes, aliases=aliases,
                  default_fallbacks=default_fallbacks, limits=parse_limits(doc.get("limits")), config_path=path,
                  make_direct=functools.partial(direct_route, path, classes))
