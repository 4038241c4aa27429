"""Run Debian's wrk with bench/post.lua and parse the JSON line its `done()` prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

POST_LUA = Path(__file__).with_name("post.lua")


class WrkError(RuntimeError):
    pass


def ensure_wrk() -> str:
    """Path to wrk; installs Debian's package when it is missing and we are root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkError("wrk is not installed and this is not root: run `sudo apt-get install -y wrk`")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0:
            raise WrkError(f"{' '.join(cmd)} failed: {done.stderr.strip()[-500:]}")
    found = shutil.which("wrk")
    if not found:
        raise WrkError("apt-get installed wrk but it is not on PATH")
    return found


def wrk_version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout + done.stderr).strip().splitlines()
    return " ".join(first[0].split()[:2]) if first else "wrk ?"  # "wrk debian/4.1.0-3+b2"


@dataclass
class WrkResult:
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_wrk(
    url: str,
    connections: int,
    duration_s: float,
    *,
    key: str = "gw-bench-key",
    headers: list[str] | None = None,
    threads: int | None = None,
    timeout_s: float = 10.0,
    body: str | None = None,
    stagger_ms: float = 0.0,
) -> WrkResult:
    """One wrk run. `headers` are "Name: value" strings added to every request. `stagger_ms` spreads
    each connection's first request over that long instead of sending them all at the same instant."""
    wrk = ensure_wrk()
    n_threads = threads or max(1, min(connections, os.cpu_count() or 1))
    seconds = max(1, round(duration_s))  # wrk takes whole seconds only
    cmd = [
        wrk, f"-t{n_threads}", f"-c{connections}", f"-d{seconds}s", f"--timeout={max(1, round(timeout_s))}s",
        "--latency", "-s", str(POST_LUA), url, "--", key, *(headers or []),
    ]
    env = dict(os.environ)
    if body is not None:
        env["BENCH_BODY"] = body
    if stagger_ms > 0:
        env["BENCH_STAGGER_MS"] = str(round(stagger_ms))
        env["BENCH_CONNS_PER_THREAD"] = str(max(1, connections // n_threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + timeout_s + 30,
                          check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise WrkError(f"wrk failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    lat = data["latency_us"]
    secs = data["duration_us"] / 1e6
    return WrkResult(
        connections=connections,
        threads=n_threads,
        duration_s=secs,
        requests=data["requests"],
        rps=data["requests"] / secs if secs else 0.0,
        p50_ms=lat["p50"] / 1000,
        p90_ms=lat["p90"] / 1000,
        p99_ms=lat["p99"] / 1000,
        p999_ms=lat["p999"] / 1000,
        mean_ms=lat["mean"] / 1000,
        max_ms=lat["max"] / 1000,
        errors={k: int(v) for k, v in data["errors"].items() if v},
    )
