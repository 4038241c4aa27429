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
