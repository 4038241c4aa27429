"""Provider variables named after the provider's own SDK (key aliases, a base URL variable, options from
the environment): read at load, documented in the generated tables."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import msgspec

from image_gateway.config import load_config
from image_gateway.config.table import provider_settings
from image_gateway.core.types import CallContext, GeneratedImage, ImageRequest, ProviderResult
from image_gateway.providers.base import SyncProvider


class EnvOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    api_version: str = "2024-10-21"


class EnvNamedProvider(SyncProvider):
    name = "envnamed"
    env_prefix = "ENVNAMED"
    key_env = "ENVNAMED_API_TOKEN"
    key_env_aliases = ("OTHER_ENVNAMED_KEY",)
    base_url_env = "ENVNAMED_ENDPOINT"
    option_envs: ClassVar[dict[str, str]] = {"ENVNAMED_API_VERSION": "api_version"}
    default_base_url = "http://127.0.0.1:9"
    Options = EnvOptions

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        return ProviderResult([GeneratedImage(b64="")])


def _cfg(tmp_path: Path, env: dict[str, str], extra: str = "") -> object:
    path = tmp_path / "gateway.yaml"
    path.write_text(f'providers:\n  envnamed: {{class: "tests.test_provider_env:EnvNamedProvider"{extra}}}\n')
    return load_config(env, config_path=path, env_file=None)


def test_the_key_alias_is_read_when_the_first_variable_is_unset(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"OTHER_ENVNAMED_KEY": "k-alias", "ENVNAMED_ENDPOINT": "http://127.0.0.1:1234/"})
    p = cfg.providers["envnamed"]  # type: ignore[attr-defined]
    assert p.api_key == "k-alias" and p.base_url == "http://127.0.0.1:1234"
    cfg = _cfg(tmp_path, {"OTHER_ENVNAMED_KEY": "k-alias", "ENVNAMED_API_TOKEN": "k-main"})
    assert cfg.providers["envnamed"].api_key == "k-main"  # type: ignore[attr-defined]


def test_an_option_comes_from_its_variable_unless_yaml_sets_it(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"ENVNAMED_API_VERSION": "2025-04-01-preview"})
    assert cfg.providers["envnamed"].options["api_version"] == "2025-04-01-preview"  # type: ignore[attr-defined]
    cfg = _cfg(tmp_path, {"ENVNAMED_API_VERSION": "2025-04-01-preview"}, ', api_version: "2024-02-01"')
    assert cfg.providers["envnamed"].options["api_version"] == "2024-02-01"  # type: ignore[attr-defined]


def test_the_rows_name_the_providers_own_variables() -> None:
    rows = provider_settings("envnamed", EnvNamedProvider)
    assert [r.env for r in rows] == ["ENVNAMED_API_TOKEN", "ENVNAMED_ENDPOINT", None, "ENVNAMED_API_VERSION"]
    assert "OTHER_ENVNAMED_KEY" in rows[0].doc
