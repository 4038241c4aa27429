"""Shared fixtures: a factory for real gateway processes, and the fake upstreams."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gateway import GatewayProcess
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

warnings.filterwarnings("ignore", message=".*AppKey.*")

GatewayFactory = Callable[..., GatewayProcess]


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
