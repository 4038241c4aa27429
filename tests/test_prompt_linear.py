"""Caller text is handled in linear time: 100,000 characters of whitespace, digits or ratio-shaped
junk go through the ratio parser, `no-enhance` removal, the LLM JSON reader and the chat surface in
milliseconds. (The old ratio regex took cubic time on whitespace: 600 spaces stalled the whole
process for ~15 s.) The probe runs in a subprocess, so code that is not linear fails on the timeout
instead of hanging the suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 60.0  # linear code needs a few seconds here, most of them imports; the old code, hours
# A bound for a linear algorithm on 100 KB (milliseconds) against the seconds-to-hours of the old
# one; not a benchmark. Measured as CPU time: wall time on a busy shared machine is not ours.
PARSERS_CPU_S = 0.5
REQUEST_CPU_S = 0.5


def _probe(workdir: Path) -> list[dict[str, Any]]:
    try:
        out = subprocess.run([sys.executable, "-m", "tests.linear_probe", str(workdir)], cwd=ROOT,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        done = [json.loads(line)["what"] for line in stdout.splitlines() if line.startswith("{")]
        pytest.fail(f"the probe did not finish in {TIMEOUT_S:g} s; it hung after {done[-1:] or 'nothing'}")
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_100k_characters_of_junk_take_milliseconds(tmp_path: Path) -> None:
    steps = _probe(tmp_path)
    parsers = [s for s in steps if not s["what"].startswith("chat ")]
    chats = [s for s in steps if s["what"].startswith("chat ") and s["what"] != "chat baseline"]
    assert len(parsers) == 22 and len(chats) == 6, [s["what"] for s in steps]
    cpu = sum(s["cpu"] for s in parsers)
    assert cpu < PARSERS_CPU_S, {s["what"]: (round(s["cpu"], 4), round(s["wall"], 4)) for s in parsers}
    for s in chats:
        assert s["cpu"] < REQUEST_CPU_S, s
