"""The settings the gateway runs with: plain frozen values, built by the loader (config/).

Every layer may import these; none of them loads anything. Defaults are declared here, once:
the settings table (config/table.py) reads them from the fields for its docs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError as ConfigError  # (one class; config/ and its callers name it from here)
from ..errors import mask_key

DEFAULT_MAX_PROMPT_CHARS = 32000  # a route's prompt limit unless its upstream or option says otherwise
TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})
_UPSTREAM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*(?:/[A-Za-z0-9][A-Za-z0-9._:+-]*)*")
_DIRECT_CACHE = 1024




def truthy(value: Any) -> bool | None:
    """The one reading of a yes/no value: a bool, 0/1, or a word ("true", "off", ...). None = not a bool."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    return None


@dataclass(frozen=True, repr=False)
class EnhanceSettings:
    api_key: str | None = None
    base_url: str = "https://api.openai.com/v1"  # any OpenAI-compatible chat endpoint
    model: str = "gpt-4o-mini"
    timeout_s: float = 10.0

    def __repr__(self) -> str:
        key = "None" if self.api_key is None else repr(mask_key(self.api_key))
        return (
            f"EnhanceSettings(api_key={key}, base_url={self.base_url!r}, "
            f"model={self.model!r}, timeout_s={self.timeout_s!r})"
        )

    __str__ = __repr__

    @property
    def enabled(self) -> bool:
        return bool(self.api_key)

    @property
    def url(self) -> str:
        """The chat-completions URL; a base URL that already ends in /chat/completions is kept."""
        base = self.base_url.rstrip("/")
        if base.endswith("/chat/completions"):
            return base
        return base + "/chat/completions"



@dataclass(frozen=True)
class DeploymentSettings:
    """One upstream account/base URL of a route. Unset fields inherit the provider's settings."""

    label: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout_s: float | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyLimit:
    rpm: float = 0.0  # requests per minute; 0 = unlimited
    concurrent: int = 0  # jobs in flight; 0 = unlimited


@dataclass(frozen=True)
class LimitSettings:
    default: KeyLimit = field(default_factory=KeyLimit)
    per_key: Mapping[str, KeyLimit] = field(default_factory=dict, repr=False)  # key -> override

    @property
    def enabled(self) -> bool:
        return bool(self.default.rpm or self.default.concurrent or self.per_key)

    def for_key(self, key: str) -> KeyLimit:
        return self.per_key.get(key, self.default)



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
    # Made for a `<provider>/<upstream model>` name (Config.resolve), not configured.
    direct: bool = False


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
    metrics_key: str | None = field(default=None, repr=False)  # GET /metrics (the admin key works too)
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    routes: Mapping[str, Route] = field(default_factory=dict)  # by name
    aliases: Mapping[str, str] = field(default_factory=dict)  # alias -> route name
    default_fallbacks: tuple[str, ...] = ()
    router: RouterSettings = field(default_factory=RouterSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    watch_config: bool = True  # poll the YAML file's mtime and reload on change
    public_base_url: str | None = None
    # An Images API answer's form when the caller names no response_format (per route:
    # `default_response_format`): "both" (url and b64_json), "url", "b64_json", "native" (the upstream's).
    default_response_format: str = "both"
    data_dir: Path = Path("./data")
    image_ttl_s: float = 24 * 3600.0
    max_body_bytes: int = 50 * 1024 * 1024
    download_max_bytes: int = 50 * 1024 * 1024
    download_timeout_s: float = 60.0
    job_deadline_s: float = 600.0
    sse_keepalive_s: float = 10.0  # streams: an SSE comment whenever nothing else was sent this long
    probe_interval_s: float = 5.0  # self-hosted upstreams (ComfyUI, A1111): readiness probed this often
    default_model: str = "demo"  # used when a request names no model
    cors_origins: tuple[str, ...] = ("*",)
    log_level: str = "INFO"
    access_log: bool = True
    enhance: EnhanceSettings = field(default_factory=EnhanceSettings)
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_attempts: int = 5  # task webhooks: tries per delivery, with exponential back-off
    webhook_backoff_s: float = 2.0  # first back-off (doubles each retry)
    private_url_allowlist: tuple[str, ...] = ()  # internal hosts caller URLs may reach (media/egress.py)
    task_ttl_s: float = 7 * 24 * 3600.0  # finished async tasks are kept this long
    # HMAC key for task owners' fingerprints (engine/owners.py); None = one generated into DATA_DIR.
    task_owner_secret: str | None = field(default=None, repr=False)
    instance: str = ""  # a label for this process in /health (which of several answered)
    gc_gen0_threshold: int = 20_000  # see gc_tuning.py; 0 keeps Python's default (700)
    header_timeout_s: float = 10.0  # a connection that has not sent a request's headers by then is closed (0 = off)
    max_connections: int = 2048  # open connections per worker; past it, requests get 503 (server.py)
    # Shared state for equal replicas (state/): None = SQLite under data_dir, one process per folder.
    redis_url: str | None = field(default=None, repr=False)  # (may carry a password)
    task_lease_s: float = 15.0  # a process's claim on polling a task, without renewal
    image_store: str = "local"  # "local" (data_dir/images) or "s3"
    s3_bucket: str | None = None
    s3_prefix: str = "images/"
    s3_endpoint_url: str | None = None  # MinIO, R2, Ceph...; None = AWS
    s3_region: str | None = None
    s3_public_base_url: str | None = None  # hosted-image URLs on this base instead of the gateway's origin
    config_path: Path | None = None
    # `<provider>/<upstream model>` names are served without a route (resolve); `make_direct` is the
    # loader's Route builder for one (options checked, prompt limit), and `_direct` caches what it made.
    direct_provider_models: bool = True
    make_direct: Callable[[str, str], Route] | None = field(default=None, repr=False, compare=False)
    _direct: dict[str, Route] = field(default_factory=dict, init=False, repr=False, compare=False)

    def resolve(self, model: str) -> Route | None:
        route = self.routes.get(model)
        if route is None:
            target = self.aliases.get(model)
            route = self.routes.get(target) if target else None
            if route is None and self.direct_provider_models:
                route = self.direct_route(model)
        return route

    def direct_route(self, model: str) -> Route | None:
        """The Route for `<provider>/<upstream model>` (a registered provider, a plain model name), made
        once per snapshot; None for anything else."""
        route = self._direct.get(model)
        if route is not None:
            return route
        provider, _, upstream = model.partition("/")
        # The upstream name goes into upstream URLs: plain path segments only (no "..", "?", "#", "%").
        if (provider not in self.providers or len(upstream) > 256 or not _UPSTREAM_NAME.fullmatch(upstream)
                or ".." in upstream):
            return None
        made = self.make_direct
        route = made(provider, upstream) if made else Route(model, provider, upstream, direct=True)
        if len(self._direct) >= _DIRECT_CACHE:  # callers choose the names: keep the cache bounded
            self._direct.clear()
        self._direct[model] = route
        return route

    @property
    def redis_password(self) -> str | None:
        """The password inside REDIS_URL (scrubbed like a key; the URL itself is never logged)."""
        if not self.redis_url:
            return None
        from urllib.parse import urlsplit

        return urlsplit(self.redis_url).password or None

    def secrets(self) -> list[str]:
        """Every configured key, for scrubbing text bound for a client or a log."""
        out = [p.api_key for p in self.providers.values() if p.api_key]
        out += [d.api_key for r in self.routes.values() for d in r.deployments if d.api_key]
        out += list(self.limits.per_key)
        out += list(self.gateway_keys)
        out += [k for k in (self.admin_key, self.metrics_key, self.enhance.api_key, self.webhook_secret,
                            self.task_owner_secret, self.redis_password) if k]
        return out

    def describe(self) -> dict[str, Any]:
        """Providers, routes, limits and router policy with keys masked; `check-config` adds the
        scalar settings from the settings table (config/describe.py)."""
        return {
            "providers": {
                n: {"base_url": p.base_url, "api_key": mask_key(p.api_key), "timeout_s": p.timeout_s,
                    **dict(p.options)}
                for n, p in self.providers.items()
            },
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
            "router": dataclasses.asdict(self.router),
        }
