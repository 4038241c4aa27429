"""Settings: environment > .env file > YAML file > built-in defaults.

Keys and addresses come from the environment (or `.env`); routes and policy from the optional
YAML file. A key may appear in YAML only as a `${VAR}` reference so the file can be shared.
The result is an immutable snapshot; hot reload builds a new one and swaps it whole.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from .errors import ConfigError as ConfigError  # (re-exported: callers catch config.ConfigError)
from .errors import mask_key
from .media.egress import parse_allowlist
from .prompt.enhance import EnhanceSettings
from .prompt.limits import DEFAULT_MAX_PROMPT_CHARS, max_prompt_chars
from .providers.base import RouteSpec
from .providers.options import provider_options, route_options
from .providers.registry import PROVIDER_CLASSES, provider_classes
from .routing.settings import (
    DeploymentSettings,
    LimitSettings,
    SettingsError,
    check_key_refs,
    parse_deployments,
    parse_limits,
)


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    base_url: str
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float = 300.0
    options: Mapping[str, Any] = field(default_factory=dict)
    adapter: Any = None  # the adapter class (providers/registry.py; a plugin's own class)


@dataclass(frozen=True)
class Route:
    name: str
    provider: str
    upstream_model: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    # Several accounts/base URLs of this one model, balanced least-busy (routing/deployments.py).
    deployments: tuple[DeploymentSettings, ...] = ()
    # Longer prompts get 400 (route option `max_prompt_chars`, else the upstream's limit: prompt/limits.py).
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS


@dataclass(frozen=True)
class RouterSettings:
    retries: int = 2  # re-sends per route (spread over its deployments) before its fallbacks
    cooldown_failures: int = 3  # consecutive failures that take a deployment out
    cooldown_s: float = 60.0  # how long it stays out before one probe request is let through
    backoff_s: float = 0.5  # first back-off; doubles per retry, with jitter
    backoff_max_s: float = 8.0
    max_retry_after_s: float = 30.0  # a longer upstream Retry-After is not waited for
    idempotency_ttl_s: float = 24 * 3600.0


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 3000
    gateway_keys: frozenset[str] = field(default_factory=frozenset, repr=False)
    admin_key: str | None = field(default=None, repr=False)
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)  # by name
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias -> route name
    default_fallbacks: tuple[str, ...] = ()
    router: RouterSettings = field(default_factory=RouterSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    watch_config: bool = True  # poll the YAML file's mtime and reload on change
    public_base_url: str | None = None
    data_dir: Path = Path("./data")
    image_ttl_s: float = 24 * 3600.0
    max_body_bytes: int = 50 * 1024 * 1024
    download_max_bytes: int = 50 * 1024 * 1024
    download_timeout_s: float = 60.0
    job_deadline_s: float = 600.0
    sse_keepalive_s: float = 10.0  # streams: an SSE comment whenever nothing else was sent this long
    default_model: str = "demo"  # used when a request names no model
    cors_origins: tuple[str, ...] = ("*",)
    log_level: str = "INFO"
    access_log: bool = True
    enhance: EnhanceSettings = field(default_factory=lambda: EnhanceSettings(api_key=None))
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 5  # task webhooks: tries per delivery, with exponential back-off
    webhook_backoff_s: float = 2.0  # first back-off (doubles each retry)
    private_url_allowlist: tuple[str, ...] = ()  # internal hosts caller URLs may reach (media/egress.py)
    task_ttl_s: float = 7 * 24 * 3600.0  # finished async tasks are kept this long
    # HMAC key for task owners' fingerprints (engine/owners.py); None = one generated into DATA_DIR.
    task_owner_secret: str | None = field(default=None, repr=False)
    instance: str = ""  # a label for this process in /health (which of several answered)
    gc_gen0_threshold: int = 20_000  # see gc_tuning.py; 0 keeps Python's default (700)
    config_path: Path | None = None

    def resolve(self, model: str) -> Route | None:
        route = self.routes.get(model)
        if route is None:
            target = self.aliases.get(model)
            route = self.routes.get(target) if target else None
        return route

    def secrets(self) -> list[str]:
        """Every configured key, for scrubbing text bound for a client or a log."""
        out = [p.api_key for p in self.providers.values() if p.api_key]
        out += [d.api_key for r in self.routes.values() for d in r.deployments if d.api_key]
        out += list(self.limits.per_key)
        out += list(self.gateway_keys)
        out += [k for k in (self.admin_key, self.enhance.api_key, self.webhook_secret, self.task_owner_secret) if k]
        return out

    def describe(self) -> dict[str, Any]:
        """The resolved config with keys masked, for `check-config`."""
        return {
            "listen": f"{self.host}:{self.port}",
            "config_file": str(self.config_path) if self.config_path else None,
            "gateway_keys": [mask_key(k) for k in sorted(self.gateway_keys)],
            "admin_key": mask_key(self.admin_key) if self.admin_key else None,
            "public_base_url": self.public_base_url,
            "data_dir": str(self.data_dir),
            "image_ttl_s": self.image_ttl_s,
            "max_body_bytes": self.max_body_bytes,
            "job_deadline_s": self.job_deadline_s,
            "cors_origins": list(self.cors_origins),
            "private_url_allowlist": list(self.private_url_allowlist),
            "providers": {
                n: {"base_url": p.base_url, "api_key": mask_key(p.api_key), "timeout_s": p.timeout_s,
                    **dict(p.options)}
                for n, p in self.providers.items()
            },
            "enhance": {"base_url": self.enhance.base_url, "model": self.enhance.model,
                        "api_key": mask_key(self.enhance.api_key), "timeout_s": self.enhance.timeout_s},
            "routes": {
                r.name: {"provider": r.provider, "upstream_model": r.upstream_model, "aliases": list(r.aliases),
                         "fallbacks": list(r.fallbacks), "defaults": dict(r.defaults), **dict(r.options),
                         **({"deployments": [{"name": d.label, "base_url": d.base_url, "api_key": mask_key(d.api_key),
                                              "timeout_s": d.timeout_s, **dict(d.options)} for d in r.deployments]}
                            if r.deployments else {})}
                for r in self.routes.values()
            },
            "limits": {"rpm": self.limits.default.rpm, "concurrent": self.limits.default.concurrent,
                       "keys": {mask_key(k): vars(v) for k, v in self.limits.per_key.items()}},
            "aliases": dict(self.aliases),
            "default_fallbacks": list(self.default_fallbacks),
            "router": vars(self.router) if hasattr(self.router, "__dict__") else str(self.router),
        }


_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TRUE = {"1", "true", "yes", "on"}


def _expand(value: Any, env: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return _REF.sub(lambda m: env.get(m.group(1), ""), value)
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    return value


def _num(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def merged_env(environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env") -> dict[str, str]:
    """Environment over `.env` (the file only fills what the environment leaves unset)."""
    env: dict[str, str] = {}
    if env_file and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def _read_yaml(path: Path, env: Mapping[str, str]) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping at the top level")
    known = {"providers", "routes", "aliases", "default_fallbacks", "router", "server", "images", "enhance",
             "limits"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"config file {path}: unknown section(s) {sorted(unknown)}; known: {sorted(known)}")
    for key in ("api_key",):
        for pname, p in (data.get("providers") or {}).items():
            raw = (p or {}).get(key)
            if raw is not None and not _REF.fullmatch(str(raw)):
                raise ConfigError(f"providers.{pname}.api_key must be a ${{VAR}} reference, not a literal key")
    try:
        check_key_refs(data)
    except SettingsError as e:
        raise ConfigError(str(e)) from None
    return _expand(data, env)  # type: ignore[no-any-return]


def _route_from_spec(provider: str, spec: RouteSpec) -> Route:
    return Route(spec.name, provider, spec.upstream_model, dict(spec.defaults), tuple(spec.aliases), (),
                 dict(spec.options), spec.description)


def _route_from_yaml(item: Any, base: Mapping[str, Route], classes: Mapping[str, Any] = PROVIDER_CLASSES) -> Route:
    if not isinstance(item, dict) or not item.get("name"):
        raise ConfigError(f"each route needs a name: {item!r}")
    name = str(item["name"])
    old = base.get(name)
    provider = str(item.get("provider") or (old.provider if old else ""))
    if provider not in classes:
        raise ConfigError(f"route {name}: unknown provider {provider!r}; known: {sorted(classes)}")
    known = {"name", "provider", "upstream_model", "defaults", "aliases", "fallbacks", "description", "options",
             "deployments"}
    options = dict(old.options) if old else {}
    options.update(item.get("options") or {})
    options.update({k: v for k, v in item.items() if k not in known})  # flat route options
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
        deployments=_deployments(name, provider, item.get("deployments")) if "deployments" in item else (
            old.deployments if old else ()),
    )


def _deployments(route: str, provider: str, raw: Any) -> tuple[DeploymentSettings, ...]:
    try:
        return parse_deployments(route, provider, raw)
    except SettingsError as e:
        raise ConfigError(str(e)) from None


def load_config(environ: Mapping[str, str] | None = None, config_path: str | Path | None = None,
                env_file: str | Path | None = ".env") -> Config:
    """Build a validated snapshot. Raises ConfigError with a message that names the problem."""
    env = merged_env(environ, env_file)
    path_str = config_path or env.get("GATEWAY_CONFIG")
    path = Path(path_str) if path_str else None
    doc = _read_yaml(path, env) if path else {}

    server = doc.get("server") or {}
    images = doc.get("images") or {}

    providers: dict[str, ProviderSettings] = {}
    classes = provider_classes(doc.get("providers") or {}, str(path or ""))  # built-ins + `class:` plugins
    for name, cls in classes.items():
        y = dict((doc.get("providers") or {}).get(name) or {})
        y.pop("class", None)
        prefix = cls.env_prefix
        key = env.get(f"{prefix}_API_KEY") or y.pop("api_key", None) or None
        y.pop("api_key", None)
        base_url = (env.get(f"{prefix}_BASE_URL") or y.pop("base_url", None) or cls.default_base_url).rstrip("/")
        y.pop("base_url", None)
        timeout = float(y.pop("timeout_s", 300.0))
        providers[name] = ProviderSettings(name, base_url, key, timeout, provider_options(path, name, cls, y), cls)
    unknown_p = set(doc.get("providers") or {}) - set(classes)
    if unknown_p:
        raise ConfigError(f"unknown provider(s) {sorted(unknown_p)}; known: {sorted(classes)}")

    routes: dict[str, Route] = {}
    for name, cls in classes.items():
        for spec in cls.builtin_routes:
            routes[spec.name] = _route_from_spec(name, spec)
    for item in doc.get("routes") or []:
        r = _route_from_yaml(item, routes, classes)
        routes[r.name] = r
    for name, r in routes.items():  # resolved once here: a request only compares a length
        r = dataclasses.replace(r, options=route_options(path, r, classes[r.provider]))  # typed, checked
        try:
            routes[name] = dataclasses.replace(r, max_prompt_chars=max_prompt_chars(r.provider, r.upstream_model,
                                                                                    r.options))
        except ValueError as e:
            raise ConfigError(f"route {name}: {e}") from None

    aliases: dict[str, str] = {}
    for r in routes.values():
        for a in r.aliases:
            aliases[a] = r.name
    for a, target in (doc.get("aliases") or {}).items():
        aliases[str(a)] = str(target)
    default_model = env.get("DEFAULT_MODEL") or server.get("default_model") or "demo"
    if default_model not in routes and default_model not in aliases:
        raise ConfigError(f"DEFAULT_MODEL {default_model!r} is not a known route")
    for a, target in aliases.items():
        if target not in routes:
            raise ConfigError(f"alias {a!r} points at unknown route {target!r}")
    default_fallbacks = tuple(str(x) for x in doc.get("default_fallbacks") or ())
    for r in routes.values():
        for fb in (*r.fallbacks, *default_fallbacks):
            if fb not in routes and fb not in aliases:
                raise ConfigError(f"route {r.name}: fallback {fb!r} is not a known route")

    router_doc = doc.get("router") or {}
    try:
        router = RouterSettings(**router_doc)
        limits = parse_limits(doc.get("limits"))
    except TypeError as e:
        raise ConfigError(f"router: {e}") from None
    except SettingsError as e:
        raise ConfigError(str(e)) from None

    gw_keys = {k.strip() for k in (env.get("GATEWAY_API_KEYS") or "").split(",") if k.strip()}
    if env.get("GATEWAY_API_KEY"):
        gw_keys.add(env["GATEWAY_API_KEY"].strip())

    owner_secret = env.get("TASK_OWNER_SECRET") or None
    if owner_secret is not None and len(owner_secret) < 16:
        raise ConfigError("TASK_OWNER_SECRET must be at least 16 characters (it keys the task owners' fingerprints)")

    enh = doc.get("enhance") or {}
    enhance = EnhanceSettings(
        api_key=env.get("ENHANCE_OPENAI_API_KEY") or None,
        base_url=(env.get("ENHANCE_OPENAI_BASE_URL") or enh.get("base_url") or "https://api.openai.com/v1").rstrip("/"),
        model=env.get("ENHANCE_OPENAI_MODEL") or enh.get("model") or "gpt-4o-mini",
        timeout_s=_num(env, "ENHANCE_TIMEOUT_S", float(enh.get("timeout_s", 10.0))),
    )
    try:
        port = int(env.get("PORT") or server.get("port") or 3000)
    except ValueError:
        raise ConfigError(f"PORT must be an integer, got {env.get('PORT')!r}") from None
    try:
        private_url_allowlist = parse_allowlist(env.get("PRIVATE_URL_ALLOWLIST"))
    except ValueError as e:
        raise ConfigError(f"PRIVATE_URL_ALLOWLIST: {e}") from None
    cors = env.get("CORS_ORIGINS")
    cors_origins = tuple(o.strip() for o in cors.split(",") if o.strip()) if cors is not None else tuple(
        server.get("cors_origins") or ("*",))
    return Config(
        host=env.get("HOST") or server.get("host") or "127.0.0.1",
        port=port,
        gateway_keys=frozenset(gw_keys),
        admin_key=env.get("ADMIN_API_KEY") or None,
        providers=providers,
        routes=routes,
        aliases=aliases,
        default_fallbacks=default_fallbacks,
        router=router,
        limits=limits,
        watch_config=(env.get("CONFIG_WATCH") or str(server.get("watch_config", "true"))).lower() in _TRUE,
        public_base_url=(env.get("PUBLIC_BASE_URL") or server.get("public_base_url") or "").rstrip("/") or None,
        data_dir=Path(env.get("DATA_DIR") or server.get("data_dir") or "./data"),
        image_ttl_s=_num(env, "IMAGE_TTL_S", float(images.get("ttl_s", 24 * 3600))),
        max_body_bytes=int(_num(env, "MAX_BODY_BYTES", float(server.get("max_body_bytes", 50 * 1024 * 1024)))),
        download_max_bytes=int(_num(env, "DOWNLOAD_MAX_BYTES", float(images.get("download_max_bytes", 50 << 20)))),
        download_timeout_s=_num(env, "DOWNLOAD_TIMEOUT_S", float(images.get("download_timeout_s", 60))),
        default_model=default_model,
        job_deadline_s=_num(env, "JOB_DEADLINE_S", float(server.get("job_deadline_s", 600))),
        sse_keepalive_s=_num(env, "SSE_KEEPALIVE_S", float(server.get("sse_keepalive_s", 10))),
        cors_origins=cors_origins,
        log_level=(env.get("LOG_LEVEL") or server.get("log_level") or "INFO").upper(),
        access_log=(env.get("ACCESS_LOG") or str(server.get("access_log", "true"))).lower() in _TRUE,
        enhance=enhance,
        webhook_secret=env.get("WEBHOOK_SECRET") or None,
        webhook_attempts=int(_num(env, "WEBHOOK_ATTEMPTS", float(server.get("webhook_attempts", 5)))),
        webhook_backoff_s=_num(env, "WEBHOOK_BACKOFF_S", float(server.get("webhook_backoff_s", 2.0))),
        private_url_allowlist=private_url_allowlist,
        task_ttl_s=_num(env, "TASK_TTL_S", float(server.get("task_ttl_s", 7 * 24 * 3600))),
        task_owner_secret=owner_secret,
        instance=env.get("GATEWAY_INSTANCE") or f"{socket.gethostname()}:{os.getpid()}",
        gc_gen0_threshold=int(_num(env, "GC_GEN0_THRESHOLD", float(server.get("gc_gen0_threshold", 20_000)))),
        config_path=path,
    )
