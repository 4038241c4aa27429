"""Shared fixtures: a factory for real gateway processes, and the fake upstreams."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import GatewayProcess
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

warnings.filterwarnings("ignore", message=".*AppKey.*")

GatewayFactory = Callable[..., GatewayProcess]
InProcessFactory = Callable[..., InProcessGateway]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    """`gateway(env={...}, config_yaml=..., args=[...])` starts a gateway; all are stopped at the end."""
    started: list[GatewayProcess] = []

    def make(env: dict[str, str] | None = None, config_yaml: str | None = None, start: bool = True,
             **kw: Any) -> GatewayProcess:
        gw = GatewayProcess(tmp_path / f"gw{len(started)}", env, config_yaml, **kw)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        gw.kill()


@pytest.fixture
def inprocess_gateway(tmp_path: Path) -> Iterator[InProcessFactory]:
    """`inprocess_gateway(env={...}, config_yaml=...)`: the app in this process (tests/inprocess.py), for
    request/response logic; all are stopped at the end."""
    started: list[InProcessGateway] = []

    def make(env: dict[str, str] | None = None, config_yaml: str | None = None) -> InProcessGateway:
        gw = InProcessGateway(tmp_path / f"inproc{len(started)}", env, config_yaml)
        started.append(gw)
        return gw.start()

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def openai_upstream() -> Iterator[FakeServer]:
    server = fake_openai.start()
    yield server
    server.stop()


@pytest.fixture
def fakes() -> Iterator[list[FakeServer]]:
    """Three fake OpenAI upstreams (real servers on 127.0.0.1): deployments/providers A, B, C."""
    servers = [fake_openai.start() for _ in range(3)]
    yield servers
    for s in servers:
        s.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A real redis-server of this test's own (tests/services.py)."""
    from tests.services import RedisServer

    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def s3_server(tmp_path: Path) -> Iterator[Any]:
    """A real S3-API server (moto) with a bucket, of this test's own (tests/services.py)."""
    from tests.services import S3Server

    server = S3Server(tmp_path / "s3").start()
    yield server
    server.stop()


@pytest.fixture
def hook() -> Iterator[FakeServer]:
    """A webhook receiver on 127.0.0.1 that records every POST to /hook (failures: state.fail_next)."""
    from aiohttp import web

    from tests.upstreams.base import FakeState, recording_middleware

    state = FakeState()
    app = web.Application(middlewares=[recording_middleware(state)])

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/hook", ok)
    srv = FakeServer(app, state).start()
    yield srv
    srv.stop()
