"""/metrics behind METRICS_API_KEY or ADMIN_API_KEY, /ready terse without a key (in process)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

from image_gateway.app import build_app
from image_gateway.config import ConfigError, load_config

METRICS_KEY = "gw-metrics-ops-key-0123456789"
ADMIN_KEY = "gw-admin-ops-key-0123456789"
OTHER_KEY = "gw-not-an-operator-key-0123456789"

Client = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def client(tmp_path: Path) -> Client:
    @asynccontextmanager
    async def make(**env: str) -> AsyncIterator[httpx.AsyncClient]:
        cfg = load_config({"DATA_DIR": str(tmp_path / "data"), **env}, env_file=None)
        app = build_app(cfg)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c
    return make


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _assert_no_keys(texts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    for key in (METRICS_KEY, ADMIN_KEY, OTHER_KEY):
        for t in [*texts, caplog.text]:
            assert key not in t


async def test_metrics_open_without_operator_keys(client: Client) -> None:
    # Gateway keys alone do not close /metrics: it is for scrapers, not callers (documented).
    async with client(GATEWAY_API_KEYS="gw-caller-key-0123456789") as c:
        r = await c.get("/metrics")
    assert r.status_code == 200 and "gateway_jobs_in_flight" in r.text


@pytest.mark.parametrize("env", [{"METRICS_API_KEY": METRICS_KEY}, {"ADMIN_API_KEY": ADMIN_KEY},
                                 {"METRICS_API_KEY": METRICS_KEY, "ADMIN_API_KEY": ADMIN_KEY}])
async def test_metrics_needs_the_metrics_or_admin_key(client: Client, env: dict[str, str],
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with client(**env) as c:
        for headers in ({}, _bearer(OTHER_KEY), {"Authorization": "Basic " + next(iter(env.values()))}):
            r = await c.get("/metrics", headers=headers)
            seen.append(r.text + repr(r.headers))
            assert r.status_code == 401, r.text
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["code"] == "invalid_api_key"
            assert "METRICS_API_KEY" in err["message"]
        for key in env.values():
            r = await c.get("/metrics", headers=_bearer(key))
            seen.append(r.text + repr(r.headers))
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
            assert "gateway_jobs_in_flight" in r.text
    _assert_no_keys(seen, caplog)


async def test_ready_says_only_ready_without_a_key(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    async with client(METRICS_API_KEY=METRICS_KEY, ADMIN_API_KEY=ADMIN_KEY) as c:
        for headers in ({}, _bearer(OTHER_KEY)):
            r = await c.get("/ready", headers=headers)
            seen.append(r.text)
            assert r.status_code == 200 and r.json() == {"status": "ready"}
        for key in (METRICS_KEY, ADMIN_KEY):
            r = await c.get("/ready", headers=_bearer(key))
            seen.append(r.text)
            assert r.status_code == 200 and r.json()["status"] == "ready" and "demo" in r.json()["providers"]
        health = await c.get("/health")
        assert health.status_code == 200 and set(health.json()) == {"status", "instance"}
    _assert_no_keys(seen, caplog)


async def test_ready_without_any_operator_key_configured_is_terse(client: Client) -> None:
    async with client() as c:
        r = await c.get("/ready", headers=_bearer(OTHER_KEY))
    assert r.status_code == 200 and r.json() == {"status": "ready"}


def test_connection_settings_are_read_and_checked() -> None:
    cfg = load_config({}, env_file=None)
    assert (cfg.header_timeout_s, cfg.max_connections) == (10.0, 2048)
    cfg = load_config({"HEADER_TIMEOUT_S": "2.5", "MAX_CONNECTIONS": "64", "METRICS_API_KEY": METRICS_KEY},
                      env_file=None)
    assert (cfg.header_timeout_s, cfg.max_connections) == (2.5, 64)
    assert METRICS_KEY in cfg.secrets() and METRICS_KEY not in repr(cfg) and METRICS_KEY not in str(cfg.describe())
    for bad in ({"HEADER_TIMEOUT_S": "-1"}, {"MAX_CONNECTIONS": "0"}, {"MAX_CONNECTIONS": "many"}):
        with pytest.raises(ConfigError):
            load_config(bad, env_file=None)
