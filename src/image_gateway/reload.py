"""Hot reload: a changed YAML file (polled), SIGHUP, or POST /admin/reload swaps the config.

What is re-read: the YAML file named at start (`GATEWAY_CONFIG` / `--config`) and `.env` in the
working directory; the process environment wins over `.env` as at start and cannot change.
What is swapped, atomically, by one assignment of `rt.router`: routes, aliases, fallbacks,
router policy, provider settings and keys, deployments, gateway keys, admin key, limits.
A new file is validated whole first; an invalid one is rejected, logged and returned to the
caller, and the running config stays. Requests in flight finish on the Router they started
with; upstream sessions the new config no longer uses are closed once those have drained.
Needing a restart: host, port, data_dir, CORS, log level, access log, image store settings, shared state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from typing import Any

from . import metrics
from .config import load_config
from .core.settings import Config, ConfigError
from .logs import update_secrets
from .routing.deployments import Pool
from .routing.router import Router
from .runtime import Runtime

log = logging.getLogger("image_gateway.reload")
_RESTART_ONLY = ("host", "port", "data_dir", "cors_origins", "log_level", "access_log", "image_ttl_s",
                 "max_body_bytes", "download_max_bytes", "download_timeout_s", "public_base_url",
                 "image_store", "s3_bucket", "s3_prefix", "s3_endpoint_url", "s3_region", "s3_public_base_url",
                 "redis_url", "task_lease_s")


class Reloader:
    def __init__(self, rt: Runtime, env_file: str | None = ".env") -> None:
        self.rt = rt
        self.env_file = env_file
        self.draining: list[Pool] = []
        rt.router.retired = self.draining
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._secrets: set[str] = set(rt.cfg.secrets())

    async def reload(self, trigger: str) -> Config:
        """Load, validate and swap. Raises ConfigError (old config kept) when the new one is invalid."""
        async with self._lock:
            old = self.rt.router
            try:
                cfg = await asyncio.to_thread(load_config, None, old.cfg.config_path, self.env_file)
                pool = Pool(cfg, old.pool)
            except ConfigError as e:
                metrics.RELOADS.labels(trigger, "rejected").inc()
                log.error("config reload rejected; keeping the running config",
                          extra={"trigger": trigger, "error": str(e)})
                raise
            except Exception as e:  # a provider that refuses its settings
                metrics.RELOADS.labels(trigger, "rejected").inc()
                log.exception("config reload rejected; keeping the running config", extra={"trigger": trigger})
                raise ConfigError(f"the new config could not be applied: {type(e).__name__}") from None
            changed = [k for k in _RESTART_ONLY if getattr(cfg, k) != getattr(old.cfg, k)]
            new = Router(cfg, pool, old.engine)
            new.retired = self.draining
            # Old keys stay scrubbed from logs too: requests on the old config are still running.
            self._secrets.update(cfg.secrets())
            update_secrets(sorted(self._secrets))
            self.rt.router = new  # the swap: one assignment, seen by every request that starts after it
            self.rt.generation += 1
            self.draining.append(old.pool)
            self._spawn(self._retire(old.pool, pool, max(old.cfg.job_deadline_s, 60.0)))
            metrics.RELOADS.labels(trigger, "ok").inc()
            log.info("config reloaded", extra={"trigger": trigger, "generation": self.rt.generation,
                                               "routes": len(cfg.routes), "needs_restart": changed or None})
            return cfg

    async def _retire(self, pool: Pool, successor: Pool, max_wait_s: float) -> None:
        try:
            await pool.retire(successor, max_wait_s)
        finally:
            with contextlib.suppress(ValueError):
                self.draining.remove(pool)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _try(self, trigger: str) -> None:
        with contextlib.suppress(ConfigError):
            await self.reload(trigger)

    async def watch(self, interval_s: float = 1.0) -> None:
        """Poll the YAML file's stat; reload when it changes and has stayed put for a moment."""
        path = self.rt.cfg.config_path
        if path is None:
            return
        last = _stat(path)
        while True:
            await asyncio.sleep(interval_s)
            now = _stat(path)
            if now is None or now == last:
                continue
            await asyncio.sleep(0.1)  # let a writer finish (editors write, truncate, rename)
            settled = _stat(path)
            if settled != now:
                continue
            last = now
            await self._try("file")

    def start(self, watch_interval_s: float = 1.0) -> None:
        """Start the file watcher (if a file is configured and watching is on) and the SIGHUP handler."""
        if self.rt.cfg.watch_config:
            self._spawn(self.watch(watch_interval_s))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._try("sighup")))

    async def stop(self) -> None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for t in list(self._tasks):
            t.cancel()
        for pool in list(self.draining):
            await pool.close(keep=self.rt.router.pool.endpoints)


def _stat(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino
