"""Builds the ASGI app from a Config snapshot."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from . import gc_tuning, metrics, server
from .api import admin, admin_tasks, chat, health, images, models, tasks, web
from .api.cors import CORS
from .api.errors import error_body, gateway_error_handler, http_error_handler
from .api.idempotency import IdempotencyStore
from .api.idempotency_redis import RedisIdempotencyStore
from .api.middleware import Handler, RequestContext
from .api.ratelimit import RateLimitMiddleware
from .config import load_config
from .core.settings import Config
from .errors import GatewayError
from .logs import flush_logging, setup_logging
from .reload import Reloader
from .runtime import Runtime
from .state.redis import shared_client

log = logging.getLogger("image_gateway")


async def internal_error_handler(request: Request, exc: Exception) -> Response:
    """A bug in a Starlette-routed endpoint: answer OpenAI-shaped (Starlette's own 500 is plain text).
    Starlette re-raises after this, so RequestContext (api/middleware.py) logs it with the request id."""
    body = error_body("The gateway hit an internal error; it has been logged with this request's id.",
                      "server_error", "internal_error")
    return Response(body, status_code=500, media_type="application/json")


def build_app(cfg: Config) -> RequestContext:
    rt = Runtime(cfg, tasks=tasks.TaskService)
    reloader = Reloader(rt)
    idempotency: IdempotencyStore | RedisIdempotencyStore  # Idempotency-Key answers (API-level)
    if cfg.redis_url:  # one answer across every process (api/idempotency_redis.py)
        idempotency = RedisIdempotencyStore(shared_client(cfg.redis_url), cfg.task_lease_s,
                                            lambda: rt.cfg.job_deadline_s + 30)
    else:
        idempotency = IdempotencyStore(cfg.data_dir / "idempotency.sqlite3")
    metrics.bind(rt)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt.store.ensure()
        sweeper = asyncio.create_task(rt.sweeper.forever())
        lag = asyncio.create_task(metrics.sample_loop_lag())
        reloader.start()  # YAML file watcher + SIGHUP
        await rt.engine.start()  # open the task store, resume unfinished tasks
        await rt.probe()  # self-hosted upstreams' readiness, then re-probed in the background
        prober = asyncio.create_task(rt.probe_forever())
        if rt.health_sync is not None:
            rt.health_sync.start()  # REDIS_URL: breaker changes from the other processes
        gc_tuning.tune(cfg.gc_gen0_threshold)  # last: everything long-lived exists now
        log.info("gateway ready", extra={"listen": f"{cfg.host}:{cfg.port}", "routes": len(cfg.routes),
                                         "usable_providers": rt.usable_providers()})
        try:
            yield
        finally:
            # uvicorn runs this after in-flight requests ended (or `--grace` ran out): sessions close last.
            sweeper.cancel()
            lag.cancel()
            prober.cancel()
            await reloader.stop()
            await rt.close()
            idempotency.close()
            log.info("gateway stopped", extra={"inflight": rt.router.inflight()})
            flush_logging()

    routes = [
        Route("/v1/images/generations", images.generations, methods=["POST"]),
        Route("/v1/images/edits", images.edits, methods=["POST"]),
        Route("/v1/images/variations", images.variations, methods=["POST"]),
        Route("/v1/chat/completions", chat.completions, methods=["POST"]),
        *tasks.ROUTES,
        Route("/v1/models", models.list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", models.get_model, methods=["GET"]),
        Route("/health", health.health, methods=["GET"]),
        Route("/ready", health.ready, methods=["GET"]),
        Route("/images/{name}", health.hosted_image, methods=["GET"]),
        Route("/metrics", health.metrics_page, methods=["GET"]),
        Route("/admin/reload", admin.reload, methods=["POST"]),
        Route("/admin/deployments", admin.deployments, methods=["GET"]),
        Route("/admin/tasks", admin_tasks.list_tasks, methods=["GET"]),
        *web.ROUTES,  # /openapi.json, /docs, the playground at /
    ]
    middleware = [
        Middleware(CORS, allow_origins=list(cfg.cors_origins), allow_methods=["*"], allow_headers=["*"],
                   expose_headers=["X-Request-ID", "X-Gateway-Model", "X-Gateway-Provider", "X-Gateway-Deployment",
                                   "Retry-After", "Idempotent-Replayed", "X-Gateway-Task-Id", "Location"],
                   max_age=600),
        Middleware(RateLimitMiddleware),  # per-key rpm / concurrency; a no-op unless `limits:` is set
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={GatewayError: gateway_error_handler, HTTPException: http_error_handler,
                                        Exception: internal_error_handler})
    app.state.rt = rt
    app.state.reloader = reloader
    app.state.reload = reloader.reload  # what POST /admin/reload calls (api/admin.py)
    app.state.idempotency = idempotency
    # The hot routes skip Starlette's router (see api/middleware.py); the rest goes through it.
    # (`partial`s straight to images.handle with the Runtime bound: a layer and a State lookup less)
    hot: dict[tuple[str, str], Handler] = {
        ("POST", "/v1/images/generations"): functools.partial(images.handle, op="generate", rt=rt),
        ("POST", "/v1/images/edits"): functools.partial(images.handle, op="edit", rt=rt),
        ("POST", "/v1/images/variations"): functools.partial(images.handle, op="variation", rt=rt),
        ("POST", "/v1/chat/completions"): chat.completions}
    return RequestContext(app, access_log=cfg.access_log, hot=hot, wrap_hot=RateLimitMiddleware, starlette=app)


def create_app() -> RequestContext:
    """uvicorn factory: config from the environment (`GATEWAY_CONFIG` names the YAML file)."""
    cfg = load_config()
    setup_logging(cfg.log_level, cfg.secrets())
    # Restart-only settings of the HTTP protocol (cli.py selects it), set in each worker process.
    server.GatewayProtocol.configure(cfg.header_timeout_s, cfg.max_connections)
    return build_app(cfg)
