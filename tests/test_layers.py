"""The layers contract ([tool.importlinter] in pyproject.toml, run by `make lint`) holds on the real
tree, and fails, naming the import, when a lower layer imports a higher one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path, src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}  # this copy of the package, ahead of the installed one
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_real_tree_keeps_the_layers() -> None:
    r = _lint(ROOT, ROOT / "src")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "layers KEPT" in r.stdout


def test_a_provider_importing_the_api_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "src" / "image_gateway", tmp_path / "src" / "image_gateway",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    demo = tmp_path / "src" / "image_gateway" / "providers" / "demo.py"
    text = demo.read_text()
    anchor = "from .base import"
    assert anchor in text
    demo.write_text(text.replace(anchor, "from ..api import images  # noqa: F401\n" + anchor, 1))
    r = _lint(tmp_path, tmp_path / "src")
    assert r.returncode != 0, r.stdout
    assert "layers BROKEN" in r.stdout
    assert "image_gateway.providers is not allowed to import image_gateway.api" in r.stdout
    assert "image_gateway.providers.demo -> image_gateway.api.images" in r.stdout


def _contract_layers() -> list[list[str]]:
    import tomllib

    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return [[m.strip().removeprefix("image_gateway.") for m in layer.replace("|", ":").split(":")]
            for layer in cfg["layers"]]


def test_the_readme_diagram_lists_the_contracts_layers_in_order() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Architecture")
    diagram = readme[readme.index("```\n", start) + 4:readme.index("\n```", readme.index("```\n", start) + 4)]
    rows = [line for line in diagram.splitlines() if line.strip() and line.strip() != "v"]
    assert len(rows) >= len(_contract_layers())

    def row_of(module: str) -> int:
        hits = [i for i, row in enumerate(rows) if f"{module}/" in row or f"{module}.py" in row]
        assert hits, f"{module} is in the contract but not in the README diagram"
        return hits[0]

    previous = -1
    for layer in _contract_layers():
        at = {row_of(m) for m in layer}
        assert min(at) > previous, f"{layer} is out of order in the README diagram"
        previous = max(at)
