"""The configuration examples in the README are valid configuration (docs and code stay in step)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from image_gateway.config import load_config

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"yaml{i}" for i in range(len(BLOCKS))])
def test_readme_yaml_block_loads(tmp_path: Path, block: str) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(block)
    env = {"OPENAI_API_KEY": "sk-readme-example-0001", "OPENAI_API_KEY_2": "sk-readme-example-0002",
           "TEAM_A_GATEWAY_KEY": "gw-team-a-key"}
    cfg = load_config(env, path, None)
    assert cfg.routes and cfg.resolve("demo") is not None


def test_there_are_examples() -> None:
    assert len(BLOCKS) >= 2


def test_readme_deployment_example_configures_replicas() -> None:
    """The docker-compose example's gateways load as three replicas on one Redis and one bucket."""
    import yaml

    (block,) = [b for b in re.findall(r"```yml\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
                if "services:" in b]
    compose = yaml.safe_load(re.sub(r"\$\{(\w+)\}", lambda m: f"test-{m.group(1).lower()}-value", block))
    gateways = {n: s for n, s in compose["services"].items() if s.get("command") == "image-gateway serve"}
    assert len(gateways) == 3
    for name, service in gateways.items():
        cfg = load_config({k: str(v) for k, v in service["environment"].items()}, None, None)
        assert cfg.instance == name and cfg.redis_url == "redis://redis:6379/0"
        assert (cfg.image_store, cfg.s3_bucket, cfg.s3_prefix) == ("s3", "gateway-images", "images/")
        assert cfg.s3_endpoint_url == "http://minio:9000" and cfg.host == "0.0.0.0"
