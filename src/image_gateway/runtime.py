"""Everything a running gateway holds, built from one Config snapshot."""

from __future__ import annotations

import time
from collections.abc import Callable

import aiohttp

from .core.settings import Config
from .engine.engine import Engine
from .engine.fleet import Fleet
from .engine.host import TaskHost
from .engine.redis_store import RedisTaskStore
from .engine.sqlite_store import SqliteTaskStore
from .engine.webhooks import WebhookSender
from .media.deliver import Deliverer, new_download_session
from .media.egress import policy_for
from .media.s3_store import S3ImageStore
from .media.store import ImageStore, LocalImageStore
from .media.sweeper import Sweeper
from .providers.base import Provider
from .providers.http import new_session
from .routing.deployments import Pool
from .routing.limits import Limiter
from .routing.probes import probe_all, probe_forever
from .routing.router import Router
from .routing.shared_health import HealthSync
from .routing.shared_limits import SharedLimiter
from .state.redis import close_shared, shared_client


def image_store_for(cfg: Config) -> ImageStore:
    if cfg.image_store == "s3" and cfg.s3_bucket:
        return S3ImageStore(cfg.s3_bucket, cfg.s3_prefix, cfg.image_ttl_s, endpoint_url=cfg.s3_endpoint_url,
                            region=cfg.s3_region, public_base=cfg.s3_public_base_url)
    return LocalImageStore(cfg.data_dir / "images", cfg.image_ttl_s)


class Runtime:
    def __init__(self, cfg: Config, tasks: Callable[[Runtime], TaskHost] | None = None) -> None:
        """`tasks` makes what the engine needs from the API layer (api/tasks.py TaskService)."""
        self.started = int(time.time())
        # Async tasks: SQLite under DATA_DIR (never a key), webhooks, one poller per provider instance.
        # With REDIS_URL, in Redis, shared by equal processes under poll leases (engine/fleet.py).
        fleet = Fleet(RedisTaskStore(cfg.redis_url, cfg.task_lease_s, cfg.instance), cfg.task_lease_s) \
            if cfg.redis_url else None
        self.engine = Engine(store=SqliteTaskStore(cfg.data_dir / "tasks.sqlite3") if fleet is None else None,
                             fleet=fleet,
                             webhooks=WebhookSender(cfg.webhook_secret, cfg.webhook_attempts, cfg.webhook_backoff_s,
                                                    policy=lambda: policy_for(self.cfg.private_url_allowlist)),
                             secrets=lambda: self.cfg.secrets(), task_ttl_s=cfg.task_ttl_s,
                             host=tasks(self) if tasks is not None else None)
        self.engine.configure(cfg.data_dir, cfg.task_owner_secret)  # (a restart applies a change of these)
        # The config, its providers and routes live in the Router; a reload swaps `router` whole
        # (reload.py) and a request keeps the Router it started with.
        self.router = Router(cfg, Pool(cfg), self.engine)
        self.generation = 0  # config swaps since start
        self.limiter = Limiter()
        # REDIS_URL: rate limits and breaker state shared by every process (routing/shared_*.py).
        self.shared_limiter: SharedLimiter | None = None
        self.health_sync: HealthSync | None = None
        if cfg.redis_url:
            client = shared_client(cfg.redis_url)
            self.shared_limiter = SharedLimiter(cfg.redis_url, cfg.task_lease_s, self.engine.owners.of)
            self.health_sync = self.router.pool.sync = HealthSync(client, lambda: self.router.pool)
        self.store = image_store_for(cfg)
        # (a shared bucket is swept by one process at a time, under a Redis lock when REDIS_URL is set)
        self._sweep_redis = shared_client(cfg.redis_url) if cfg.redis_url and self.store.shared else None
        self.sweeper = Sweeper(self.store, self._sweep_redis, instance=cfg.instance)
        self._download: aiohttp.ClientSession | None = None
        self._enhance: aiohttp.ClientSession | None = None  # prompt-enhancement LLM, one pooled session
        self.deliverer = Deliverer(self.store, self.download_session, cfg.download_max_bytes, cfg.download_timeout_s)

    def download_session(self) -> aiohttp.ClientSession:
        if self._download is None or self._download.closed:
            self._download = new_download_session()
        return self._download

    def enhance_session(self) -> aiohttp.ClientSession:
        if self._enhance is None or self._enhance.closed:
            self._enhance = new_session(self.cfg.enhance.timeout_s, limit=64)
        return self._enhance

    @property
    def cfg(self) -> Config:
        return self.router.cfg

    @property
    def providers(self) -> dict[str, Provider]:
        return self.router.providers

    def usable_providers(self) -> list[str]:
        """Providers with a key (or none needed), a deployment not cooling down, and reachable if probed."""
        return self.router.usable_providers()

    async def probe(self) -> None:
        """Readiness of the self-hosted upstreams now (start-up), before the background loop takes over."""
        await probe_all(self.router.pool)

    async def probe_forever(self) -> None:
        await probe_forever(lambda: self.router.pool, self.cfg.probe_interval_s)

    async def close(self) -> None:
        await self.sweeper.release()  # (its Redis client is the shared one: close_shared() below)
        await self.store.close()
        await self.engine.close()
        await self.router.pool.close()
        if self._download is not None:
            await self._download.close()
        if self._enhance is not None:
            await self._enhance.close()
        if self.health_sync is not None:
            await self.health_sync.close()
        if self.shared_limiter is not None:
            await self.shared_limiter.close()
        await close_shared()
