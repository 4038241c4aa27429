"""Configuration: environment > .env > YAML > defaults; routes added and overridden; bad files rejected."""

from __future__ import annotations

from pathlib import Path

import pytest

from image_gateway.config import ConfigError, load_config


def _yaml(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "gw.yaml"
    p.write_text(text)
    return p


def test_precedence_env_over_dotenv_over_yaml(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("OPENAI_BASE_URL=http://from-dotenv/v1\nPUBLIC_BASE_URL=https://dotenv.example\n"
                        "MJ_API_KEY=mj-from-dotenv\n")
    y = _yaml(tmp_path, "providers:\n  openai: {base_url: http://from-yaml/v1, timeout_s: 12}\n"
                        "server: {public_base_url: https://yaml.example, port: 4111}\n")
    cfg = load_config({"PUBLIC_BASE_URL": "https://env.example"}, y, env_file)
    assert cfg.providers["openai"].base_url == "http://from-dotenv/v1"  # .env beats YAML
    assert cfg.providers["openai"].timeout_s == 12
    assert cfg.public_base_url == "https://env.example"  # environment beats .env
    assert cfg.port == 4111
    cfg2 = load_config({}, y, tmp_path / "missing.env")
    assert cfg2.providers["openai"].base_url == "http://from-yaml/v1"


def test_yaml_routes_add_and_override(tmp_path: Path) -> None:
    y = _yaml(tmp_path, """
routes:
  - name: dalle-hd
    provider: openai
    upstream_model: dall-e-3
    defaults: {quality: hd}
    aliases: [hd-image]
    fallbacks: [demo]
  - name: gpt-image-1
    defaults: {quality: low}
aliases:
  dalle: dall-e-3
""")
    cfg = load_config({}, y, None)
    hd = cfg.resolve("hd-image")
    assert hd is not None and hd.name == "dalle-hd" and hd.upstream_model == "dall-e-3"
    assert hd.defaults == {"quality": "hd"} and hd.fallbacks == ("demo",)
    g = cfg.resolve("gpt-image-1")
    assert g is not None and g.provider == "openai" and g.defaults == {"quality": "low"}
    d = cfg.resolve("dalle")
    assert d is not None and d.name == "dall-e-3"
    assert cfg.resolve("nope") is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("routes: [{name: x, provider: nosuch}]", "unknown provider"),
        ("aliases: {a: nowhere}", "unknown route"),
        ("providers:\n  openai: {api_key: sk-literal-key-123456}", "${VAR} reference"),
        ("bogus: 1", "unknown section"),
        ("routes: [{name: x, provider: demo, fallbacks: [ghost]}]", "not a known route"),
        (": : :", "not valid YAML"),
        ("- just\n- a list", "mapping"),
    ],
)
def test_invalid_files_are_rejected_with_a_clear_message(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, _yaml(tmp_path, text), None)
    assert fragment in str(info.value)
    assert "sk-literal-key-123456" not in str(info.value)


def test_key_references_and_gateway_keys(tmp_path: Path) -> None:
    y = _yaml(tmp_path, "providers:\n  openai: {api_key: '${MY_OPENAI_KEY}'}\n")
    cfg = load_config({"MY_OPENAI_KEY": "sk-ref-key-abcdef123456", "GATEWAY_API_KEYS": "a-key-1, b-key-2,",
                       "GATEWAY_API_KEY": "c-key-3"}, y, None)
    assert cfg.providers["openai"].api_key == "sk-ref-key-abcdef123456"
    assert cfg.gateway_keys == {"a-key-1", "b-key-2", "c-key-3"}
    assert "sk-ref-key-abcdef123456" not in repr(cfg) and "sk-ref-key-abcdef123456" not in str(cfg.describe())


def test_bad_numbers_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        load_config({"PORT": "eighty"}, None, None)
    with pytest.raises(ConfigError):
        load_config({"IMAGE_TTL_S": "soon"}, None, None)


@pytest.mark.parametrize(("env", "fragment"), [
    ({"REDIS_URL": "http://127.0.0.1:6379"}, "REDIS_URL must start with"),
    ({"TASK_LEASE_S": "0"}, "TASK_LEASE_S must be > 0"),
    ({"IMAGE_STORE": "ftp"}, "IMAGE_STORE must be local or s3"),
    ({"IMAGE_STORE": "s3"}, "IMAGE_STORE=s3 needs S3_BUCKET"),
])
def test_state_and_image_store_settings_are_checked_at_load(env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_config(env, env_file=None)


def test_the_redis_password_is_a_secret_to_scrub() -> None:
    cfg = load_config({"REDIS_URL": "redis://:hunter2-redis-pass@127.0.0.1:6379/0", "IMAGE_STORE": "S3",
                       "S3_BUCKET": "b", "S3_PUBLIC_BASE_URL": "https://cdn.example/img/"}, env_file=None)
    assert "hunter2-redis-pass" in cfg.secrets()
    assert cfg.image_store == "s3" and cfg.s3_public_base_url == "https://cdn.example/img"
    assert "hunter2" not in repr(cfg)
