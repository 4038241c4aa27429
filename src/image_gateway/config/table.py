"""The one table of settings: name, environment variable, YAML path, type, default, one-line doc.

It drives loading (config/loader.py), `check-config` output (config/describe.py), `.env.example`
and the README's configuration tables (config/docs.py). Defaults are not written here: they are
the fields' defaults in core/settings.py, so each is declared once. Provider rows come from the
provider registry (each class's `env_prefix` and `default_base_url`): a new provider needs no edit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.settings import Config, EnhanceSettings, ProviderSettings, RouterSettings
from ..providers.registry import PROVIDER_CLASSES

_FROM_FIELD: Any = object()  # the default is the dataclass field's


@dataclass(frozen=True)
class Setting:
    field: str  # attribute of Config ("port"), of a section ("enhance.model"); "" = not read into Config
    env: str | None  # environment variable (wins over YAML)
    yaml: str | None  # dotted YAML path ("server.port")
    type: str  # a cast in config/parse.py: str, secret, int, float, bool, list, url, path, upper, response_format
    doc: str
    section: str = "Server"
    example: str | None = None  # shown commented out in .env.example instead of the default
    shown: str | None = None  # the default as the docs say it, when it is computed at start-up
    empty_counts: bool = False  # an empty variable is a value (CORS_ORIGINS=""), not "unset"
    aliases: tuple[str, ...] = ()  # further variables read, in order, when `env` is unset
    default: Any = _FROM_FIELD

    @property
    def value_default(self) -> Any:
        if self.default is not _FROM_FIELD:
            return self.default
        owner, _, attr = self.field.rpartition(".")
        cls = {"": Config, "enhance": EnhanceSettings, "router": RouterSettings}[owner]
        f = next(f for f in dataclasses.fields(cls) if f.name == attr)
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default

    @property
    def name(self) -> str:
        return self.env or str(self.yaml)


S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("host", "HOST", "server.host", "str", "Listen address."),
    S("port", "PORT", "server.port", "int", "Listen port."),
    S("", "GATEWAY_CONFIG", None, "path", "Optional YAML file with routes and policy (same as `--config FILE`).",
      example="./gateway.yaml", default=None),
    S("data_dir", "DATA_DIR", "server.data_dir", "path",
      "Where hosted images, the task database and other state live."),
    S("public_base_url", "PUBLIC_BASE_URL", "server.public_base_url", "url",
      "Absolute base for image URLs the gateway hosts (else taken from the request's Host).",
      example="https://images.example.com", shown="request host"),
    S("cors_origins", "CORS_ORIGINS", "server.cors_origins", "list", "Comma-separated CORS origins (\"*\" = any).",
      empty_counts=True),
    S("", "FORWARDED_ALLOW_IPS", None, "list",
      "Reverse proxies (comma-separated IPs or \"*\") whose X-Forwarded-For/-Proto are trusted (read by uvicorn); "
      "unset = those headers are ignored.", example="127.0.0.1", default=None),
    S("max_body_bytes", "MAX_BODY_BYTES", "server.max_body_bytes", "int",
      "Largest request body / upload accepted, in bytes (413 above it)."),
    S("default_model", "DEFAULT_MODEL", "server.default_model", "str", "Model used when a request names none."),
    S("direct_provider_models", "DIRECT_PROVIDER_MODELS", "server.direct_provider_models", "bool",
      "Serve `<provider>/<upstream model>` names (e.g. `openai/gpt-image-1`) without a route, with that "
      "provider's defaults; off = only configured routes and aliases."),
    S("job_deadline_s", "JOB_DEADLINE_S", "server.job_deadline_s", "float",
      "Seconds a job may run before it fails with 504 timeout (per route: `deadline_s`)."),
    S("sse_keepalive_s", "SSE_KEEPALIVE_S", "server.sse_keepalive_s", "float",
      "Streams (images, chat, task events): an SSE keep-alive comment after this many quiet seconds."),
    S("probe_interval_s", "PROBE_INTERVAL_S", "server.probe_interval_s", "float",
      "Seconds between readiness probes of self-hosted upstreams (ComfyUI, A1111), in the background."),
    S("log_level", "LOG_LEVEL", "server.log_level", "upper", "Log level of the JSON logs on stderr."),
    S("access_log", "ACCESS_LOG", "server.access_log", "bool", "One JSON access line per request."),
    S("gc_gen0_threshold", "GC_GEN0_THRESHOLD", "server.gc_gen0_threshold", "int",
      "Python's young-generation GC threshold (0 = Python's default, 700); see gc_tuning.py."),
    S("header_timeout_s", "HEADER_TIMEOUT_S", "server.header_timeout_s", "float",
      "A connection that has not sent a request's headers within this many seconds is closed (0 = off)."),
    S("max_connections", "MAX_CONNECTIONS", "server.max_connections", "int",
      "Open connections per worker; past it, new requests get 503 `server_overloaded` (server.py)."),
    S("gateway_keys", "GATEWAY_API_KEYS", None, "list",
      "Comma-separated keys callers must send as `Authorization: Bearer <key>`; unset = open gateway "
      "(a caller's bearer token is used as their own provider key).", "Gateway access",
      example="gw-key-one,gw-key-two"),
    S("", "GATEWAY_API_KEY", None, "secret", "A single gateway key (added to GATEWAY_API_KEYS).", "Gateway access",
      example="gw-key-one", default=None),
    S("admin_key", "ADMIN_API_KEY", None, "secret", "Key for the admin endpoints (POST /admin/reload, "
      "GET /admin/deployments).", "Gateway access", example=""),
    S("metrics_key", "METRICS_API_KEY", None, "secret", "Key for GET /metrics (the admin key works too); with "
      "neither set, /metrics is open.", "Gateway access", example=""),
    S("watch_config", "CONFIG_WATCH", "server.watch_config", "bool",
      "Reload when the YAML file changes (mtime polled each second); SIGHUP and POST /admin/reload work either way.",
      "Gateway access"),
    S("default_response_format", "DEFAULT_RESPONSE_FORMAT", "server.default_response_format", "response_format",
      "An Images API answer's form when the caller names no response_format: both (url and b64_json: every "
      "client reads one), url, b64_json, or native (the upstream's); per route: `default_response_format`.",
      "Hosted images"),
    S("image_ttl_s", "IMAGE_TTL_S", "images.ttl_s", "float",
      "Seconds a hosted image stays available; expired files are deleted.", "Hosted images"),
    S("download_max_bytes", "DOWNLOAD_MAX_BYTES", "images.download_max_bytes", "int",
      "Cap on an upstream image URL the gateway downloads.", "Hosted images"),
    S("download_timeout_s", "DOWNLOAD_TIMEOUT_S", "images.download_timeout_s", "float",
      "Time limit on an upstream image URL the gateway downloads.", "Hosted images"),
    S("enhance.api_key", "ENHANCE_OPENAI_API_KEY", None, "secret", "Key of the prompt-enhancement chat endpoint.",
      "Prompt enhancement", example=""),
    S("enhance.base_url", "ENHANCE_OPENAI_BASE_URL", "enhance.base_url", "url",
      "Any OpenAI-compatible chat endpoint.", "Prompt enhancement"),
    S("enhance.model", "ENHANCE_OPENAI_MODEL", "enhance.model", "str", "Chat model that rewrites prompts.",
      "Prompt enhancement"),
    S("enhance.timeout_s", "ENHANCE_TIMEOUT_S", "enhance.timeout_s", "float",
      "Total budget for one enhancement call, body included.", "Prompt enhancement"),
    S("webhook_secret", "WEBHOOK_SECRET", None, "secret",
      "HMAC-SHA256 secret for signing webhook deliveries (X-Gateway-Signature).", "Async tasks", example=""),
    S("webhook_attempts", "WEBHOOK_ATTEMPTS", "server.webhook_attempts", "int", "Webhook delivery attempts.",
      "Async tasks"),
    S("webhook_backoff_s", "WEBHOOK_BACKOFF_S", "server.webhook_backoff_s", "float",
      "First back-off between webhook attempts (doubles each time).", "Async tasks"),
    S("private_url_allowlist", "PRIVATE_URL_ALLOWLIST", None, "str",
      "Internal hosts caller-supplied URLs (webhook_url, image URLs) may reach: comma-separated IPs, CIDRs or "
      "host names; unset = public addresses only.", "Async tasks", example="10.0.0.0/8,images.internal"),
    S("task_ttl_s", "TASK_TTL_S", "server.task_ttl_s", "float", "How long finished tasks stay retrievable (seconds).",
      "Async tasks"),
    S("task_owner_secret", "TASK_OWNER_SECRET", None, "secret",
      "HMAC key (16+ characters) for task owners' fingerprints; unset = a random one kept in "
      "DATA_DIR/task_owner.secret (0600).", "Async tasks", example="", shown="generated"),
    S("redis_url", "REDIS_URL", "state.redis_url", "secret",
      "Shared state for equal replicas (redis://, rediss://, a password in the URL): tasks, poll leases, "
      "idempotency, rate limits, breakers. Unset = SQLite under DATA_DIR (one process per folder).",
      "Shared state", example="redis://127.0.0.1:6379/0", default=None),
    S("task_lease_s", "TASK_LEASE_S", "state.task_lease_s", "float",
      "How long a process's claim lasts without renewal (REDIS_URL): polling a task, an Idempotency-Key "
      "being answered, a concurrency slot.", "Shared state"),
    S("image_store", "IMAGE_STORE", "images.store", "str", "Where hosted images live: local (DATA_DIR) or s3.",
      "Image store"),
    S("s3_bucket", "S3_BUCKET", "images.s3_bucket", "str", "Bucket for IMAGE_STORE=s3.", "Image store",
      example="gateway-images", default=None),
    S("s3_prefix", "S3_PREFIX", "images.s3_prefix", "str", "Key prefix of hosted images in the bucket.",
      "Image store"),
    S("s3_endpoint_url", "S3_ENDPOINT_URL", "images.s3_endpoint_url", "url",
      "S3-compatible endpoint (MinIO, R2, Ceph...); unset = AWS. Credentials: the AWS variables/chain.",
      "Image store", example="http://127.0.0.1:9000", default=None),
    S("s3_region", "S3_REGION", "images.s3_region", "str", "Region of the bucket.", "Image store",
      example="us-east-1", default=None),
    S("s3_public_base_url", "S3_PUBLIC_BASE_URL", "images.s3_public_base_url", "url",
      "Hosted-image URLs on this base (a public bucket or CDN) instead of the gateway's /images/.",
      "Image store", example="https://cdn.example.com/images", default=None),
    S("instance", "GATEWAY_INSTANCE", None, "str", "A label for this process in GET /health.", "Async tasks",
      example="gw-1", shown="host:pid"),
    S("router.retries", None, "router.retries", "int",
      "Re-sends per route (spread over its deployments) before its fallbacks.", "Router"),
    S("router.cooldown_failures", None, "router.cooldown_failures", "int",
      "Consecutive health failures that take a deployment out (0 = never).", "Router"),
    S("router.cooldown_s", None, "router.cooldown_s", "float",
      "How long a deployment stays out before one probe request is let through.", "Router"),
    S("router.backoff_s", None, "router.backoff_s", "float", "First back-off; doubles per retry, with jitter.",
      "Router"),
    S("router.backoff_max_s", None, "router.backoff_max_s", "float", "Longest back-off.", "Router"),
    S("router.max_retry_after_s", None, "router.max_retry_after_s", "float",
      "An upstream Retry-After up to this is waited for; longer ones are passed on.", "Router"),
    S("router.idempotency_ttl_s", None, "router.idempotency_ttl_s", "float",
      "How long an Idempotency-Key's answer is kept.", "Router"),
)
del S

_TIMEOUT = next(f.default for f in dataclasses.fields(ProviderSettings) if f.name == "timeout_s")


def provider_settings(name: str, cls: Any) -> tuple[Setting, ...]:
    """A provider's key, base URL and timeout (named after its class's variables), then one row per
    option it takes from the environment (`option_envs`; field = the option's name)."""
    section = f"Provider {name}"
    aliases = tuple(cls.key_env_aliases)
    also = f" Also read from {', '.join(aliases)}." if aliases else ""
    rows = (
        Setting("api_key", cls.key_variable(), f"providers.{name}.api_key", "secret",
                f"Key of the {name} provider (YAML: only as a ${{VAR}} reference).{also}", section, example="",
                default=None, aliases=aliases),
        Setting("base_url", cls.base_url_variable(), f"providers.{name}.base_url", "url",
                f"Base URL of the {name} upstream.", section, default=cls.default_base_url),
        Setting("timeout_s", None, f"providers.{name}.timeout_s", "float",
                f"Seconds the {name} upstream may stay silent while answering.", section, default=_TIMEOUT),
    )
    options = tuple(Setting(option, env, f"providers.{name}.{option}", "str", f"Option `{option}` of the {name} "
                            "provider.", section, default=None) for env, option in cls.option_envs.items())
    return rows + options


def all_settings() -> Iterator[Setting]:
    """Every row, providers' included (a local keyless one, the demo, has nothing to configure)."""
    yield from SETTINGS
    for name, cls in PROVIDER_CLASSES.items():
        if cls.capabilities.needs_key or not cls.default_base_url.startswith("local://"):  # self-hosted: a URL
            yield from provider_settings(name, cls)
