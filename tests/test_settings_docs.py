"""The settings table drives loading, `.env.example` and the README tables (generated, kept current)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from image_gateway.config import ConfigError, load_config
from image_gateway.config.docs import env_example, readme_routes, update_readme
from image_gateway.config.table import all_settings
from image_gateway.core.types import CallContext, ImageRequest, ProviderResult
from image_gateway.providers.base import Capabilities, RouteSpec, SyncProvider
from image_gateway.providers.registry import PROVIDER_CLASSES

ROOT = Path(__file__).resolve().parent.parent


def test_committed_env_example_is_current() -> None:
    assert (ROOT / ".env.example").read_text(encoding="utf-8") == env_example(), \
        "stale .env.example: run `image-gateway docs --write`"


def test_committed_readme_tables_are_current() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert update_readme(text) == text, "stale README tables: run `image-gateway docs --write`"


def test_every_variable_the_env_example_sets_loads(tmp_path: Path) -> None:
    env = dict(line.split("=", 1) for line in env_example().splitlines() if line and not line.startswith("#"))
    assert {"PORT", "OPENAI_BASE_URL", "WEBHOOK_BACKOFF_S"} <= set(env)
    cfg = load_config(env, None, None)
    assert cfg.port == 3000 and cfg.webhook_backoff_s == 2.0 and cfg.watch_config is True


def test_docs_command_prints_the_env_example() -> None:
    out = subprocess.run([sys.executable, "-m", "image_gateway", "docs", "--env-example"], capture_output=True,
                         text=True, check=True).stdout
    assert out == env_example()


@pytest.mark.parametrize(("env", "yaml_text", "named"), [
    ({"PORT": "eighty"}, "", "PORT"),
    ({}, "server: {port: eighty}\n", "server.port"),
    ({"CONFIG_WATCH": "maybe"}, "", "CONFIG_WATCH"),
    ({}, "server: {access_log: sometimes}\n", "server.access_log"),
    ({"JOB_DEADLINE_S": "soon"}, "", "JOB_DEADLINE_S"),
    ({}, "images: {ttl_s: [1]}\n", "images.ttl_s"),
    ({}, "router: {retries: two}\n", "router.retries"),
    ({}, "router: {retires: 2}\n", "retires"),
    ({}, "server: {prot: 3000}\n", "prot"),
    ({}, "providers: {openai: {timeout_s: long}}\n", "providers.openai.timeout_s"),
])
def test_a_bad_value_names_its_variable_or_yaml_path(tmp_path: Path, env: dict[str, str], yaml_text: str,
                                                    named: str) -> None:
    path = None
    if yaml_text:
        path = tmp_path / "gw.yaml"
        path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_config(env, path, None)
    assert named in str(info.value)


def test_bools_are_strict_and_share_one_reading(tmp_path: Path) -> None:
    for word, on in (("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False), ("False", False)):
        assert load_config({"ACCESS_LOG": word}, None, None).access_log is on
    with pytest.raises(ConfigError, match="not a valid bool"):
        load_config({"ACCESS_LOG": "enabled"}, None, None)


class _Extra(SyncProvider):
    """Extra upstream: a provider added to the registry, documented with no hand edit."""

    name: ClassVar[str] = "extra"
    env_prefix: ClassVar[str] = "EXTRA"
    default_base_url: ClassVar[str] = "https://extra.example"
    capabilities: ClassVar[Capabilities] = Capabilities()
    builtin_routes: ClassVar[tuple[RouteSpec, ...]] = (RouteSpec("extra-1", "x-one", aliases=("x1",)),)

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        raise NotImplementedError("documented, never called")


def test_a_registered_provider_gets_its_variables_and_routes_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROVIDER_CLASSES, "extra", _Extra)
    assert "EXTRA_API_KEY" in {s.env for s in all_settings()}
    text = env_example()
    assert "# EXTRA_API_KEY=\n" in text and "EXTRA_BASE_URL=https://extra.example\n" in text
    assert "| `extra` | Extra upstream | `extra-1` → `x-one` (alias `x1`) | `EXTRA_API_KEY`, `EXTRA_BASE_URL` |" \
        in readme_routes()
    cfg = load_config({"EXTRA_API_KEY": "sk-extra-0123456789", "EXTRA_BASE_URL": "https://e.example/v1/"}, None, None)
    assert cfg.providers["extra"].base_url == "https://e.example/v1" and cfg.resolve("x1") is not None
