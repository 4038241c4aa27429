"""The gateway inside the test process: `build_app` from a config, its lifespan run, an httpx client
over ASGITransport. For request/response logic; lifecycle tests start real processes (gateway.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path

import httpx

from image_gateway.app import build_app
from image_gateway.config import load_config
from image_gateway.core.settings import Config


def config(workdir: Path, env: Mapping[str, str] | None = None, config_yaml: str | None = None) -> Config:
    """What `image-gateway serve` would load from this environment (no `.env`) and YAML text."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = None
    if config_yaml is not None:
        path = workdir / "gateway.yaml"
        path.write_text(config_yaml)
    environ = {"DATA_DIR": str(workdir / "data"), "CONFIG_WATCH": "0", "GC_GEN0_THRESHOLD": "0", **(env or {})}
    return load_config(environ, path, env_file=None)


@contextlib.asynccontextmanager
async def client(workdir: Path, env: Mapping[str, str] | None = None,
                 config_yaml: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    ctx = build_app(config(workdir, env, config_yaml))
    app = ctx.starlette
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=ctx)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30) as c:
            yield c


def assert_secret_absent(workdir: Path, texts: Iterable[str], *secrets: str) -> None:
    """No secret in the given texts (responses, captured log records) or in any file under `workdir`
    (data dir, task and idempotency databases) but the config file, which names keys as ${VAR} only."""
    texts = list(texts)
    for secret in secrets:
        assert secret
        assert not any(secret in t for t in texts), f"secret {secret[:6]}... leaked into a log or response"
        for p in workdir.rglob("*"):
            if p.is_file() and p.name != "gateway.yaml":
                assert secret.encode() not in p.read_bytes(), f"secret {secret[:6]}... written to {p}"
