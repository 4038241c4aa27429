"""The lock files match pyproject.toml, carry hashes, agree with each other, and are what is installed.

A dependency added to pyproject.toml without `make lock` fails here (and `make test` would not even
install it: pip in --require-hashes mode refuses anything the lock does not list).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _entries(name: str) -> list[list[Any]]:
    """[name, version, marker, number of hashes] for each pinned entry of a lock file, in order."""
    out: list[list[Any]] = []
    for line in (ROOT / name).read_text().splitlines():
        m = _PIN.match(line)
        if m:
            out.append([canonicalize_name(m.group(1)), m.group(2), m.group(3), 0])
        elif out and line.strip().startswith("--hash=sha256:"):
            out[-1][3] += 1
    return out


def _lock(name: str) -> dict[str, tuple[str, str | None, int]]:
    """name -> (version, marker, number of hashes). A universal lock may pin a package twice under
    exclusive markers (networkx for Python < 3.12 and >= 3.12): the running interpreter's entry is kept."""
    out: dict[str, tuple[str, str | None, int]] = {}
    by_name: dict[str, list[list[Any]]] = {}
    for entry in _entries(name):
        by_name.setdefault(entry[0], []).append(entry)
    for pkg, entries in by_name.items():
        if len(entries) > 1:
            assert all(e[2] for e in entries), f"{name}: {pkg} pinned twice"
            assert all(e[3] >= 1 for e in entries), f"{name}: an entry of {pkg} has no --hash"
            live = [e for e in entries if Marker(e[2]).evaluate()]
            assert len(live) <= 1, f"{name}: {pkg} pinned twice for this interpreter"
            entries = live or entries[:1]
        _, version, marker, hashes = entries[0]
        out[pkg] = (version, marker, hashes)
    return out


RUNTIME = _lock("requirements.lock")
TEST = _lock("requirements-test.lock")
DECLARED = {
    "requirements.lock": [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"]],
    "requirements-test.lock": [*PYPROJECT["project"]["dependencies"], *PYPROJECT["build-system"]["requires"],
                               *PYPROJECT["project"]["optional-dependencies"]["test"]],
}


@pytest.mark.parametrize("lock_name", sorted(DECLARED))
def test_every_declared_dependency_is_pinned_in_the_lock_within_its_range(lock_name: str) -> None:
    lock = RUNTIME if lock_name == "requirements.lock" else TEST
    for spec in DECLARED[lock_name]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in lock, f"{spec!r} is in pyproject.toml but not in {lock_name}: run `make lock`"
        version = lock[name][0]
        assert req.specifier.contains(version, prereleases=True), (
            f"{lock_name} pins {name}=={version}, outside pyproject's {spec!r}: run `make lock`")


def test_every_entry_has_hashes_and_the_test_lock_agrees_with_the_runtime_lock() -> None:
    for lock in (RUNTIME, TEST):
        for name, (_, _, hashes) in lock.items():
            assert hashes >= 1, f"{name} has no --hash: pip --require-hashes would refuse the file"
    for name, (version, _, _) in RUNTIME.items():
        assert name in TEST, f"{name} is in requirements.lock but not requirements-test.lock: run `make lock`"
        assert TEST[name][0] == version, f"{name}: {version} for `make run`, {TEST[name][0]} for `make test`"


def test_the_installed_versions_are_the_locked_ones() -> None:
    """What this test run imports is what the lock says (else the venv predates the lock: `make test`)."""
    wrong = []
    for name, (version, marker, _) in TEST.items():
        if marker and not Marker(marker).evaluate():
            continue
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{name} not installed")
            continue
        if installed != version:
            wrong.append(f"{name} {installed} (lock: {version})")
    assert not wrong, "the venv does not match requirements-test.lock: " + ", ".join(wrong)
