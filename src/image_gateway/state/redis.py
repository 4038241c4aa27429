"""One Redis client per process (redis-py's asyncio client), and what a Redis failure means to a caller.

A request that needs shared state while Redis is unreachable gets 503 `state_unavailable` within the
short socket timeouts below (never a 500, never a hang); redis-py reconnects by itself on the next
command once Redis is back, so the gateway recovers without a restart.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import GatewayError

CONNECT_TIMEOUT_S = 1.0
COMMAND_TIMEOUT_S = 2.0
# One quick retry (a pooled connection that died with a Redis restart reconnects on it); redis-py's
# default of ten with back-off would hold a caller for seconds while Redis is down.
_RETRY = Retry(ExponentialBackoff(cap=0.1, base=0.02), retries=1)

_shared: dict[str, aioredis.Redis] = {}


class StateUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "state_unavailable"

    def __init__(self, what: str = "shared state") -> None:
        super().__init__(f"The gateway's shared state (Redis) is unavailable; {what} cannot be served now. "
                         "Retry shortly.", retryable=True)


# The task fleet's connections carry this name (CLIENT SETNAME), so an operator, or a test counting a
# request's commands, can tell its background lease renewals and scans from per-request commands.
FLEET_CLIENT_NAME = "image-gateway-tasks"


def connect(url: str, name: str | None = None) -> aioredis.Redis:
    """A pooled client; connects lazily, on the first command."""
    return aioredis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=COMMAND_TIMEOUT_S,
                                   health_check_interval=30, decode_responses=False, retry=_RETRY,
                                   client_name=name)


def shared_client(url: str) -> aioredis.Redis:
    """This process's one client for `url`: every part of the gateway (tasks, idempotency, limits,
    breakers) shares its connection pool. Created on first use; `close_shared` ends them all."""
    client = _shared.get(url)
    if client is None:
        client = _shared[url] = connect(url)
    return client


async def close_shared() -> None:
    """At shutdown: close every shared client (a later `shared_client` makes a fresh one)."""
    clients = list(_shared.values())
    _shared.clear()
    for c in clients:
        try:
            await c.aclose()
        except (RedisError, OSError):
            pass


@asynccontextmanager
async def guarded(what: str = "shared state") -> AsyncIterator[None]:
    """Redis trouble inside the block becomes StateUnavailable (its message never carries the URL)."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError) as e:
        raise StateUnavailable(what) from e
    except RedisError as e:  # (a script or command error: still not the caller's fault, still no URL)
        raise StateUnavailable(what) from e
