"""Measure one target: start-up, idle RSS, then req/s, latency, CPU and RSS at each concurrency."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procstat import RssSampler, cpu_seconds, rss_bytes
from servers import Server, StartError, http_call
from wrk import WrkError, run_wrk

MB = 1024 * 1024
IMAGE_PATH = "/v1/images/generations"
BODY = '{"model":"gpt-image-1","prompt":"a red fox"}'

# Starts the target against an upstream base URL ("http://127.0.0.1:N/v1"), logging under a dir.
Starter = Callable[[str, Path], Server]


@dataclass
class Target:
    name: str
    start: Starter
    key: str = "gw-bench-key"
    headers: list[str] = field(default_factory=list)  # "Name: value", sent on every request
    path: str = IMAGE_PATH
    skip_reason: str | None = None  # set when the target cannot run here (and why)
    version: str = ""


@dataclass
class Point:
    concurrency: int
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_ms_per_req: float | None
    rss_peak_mb: float
    rss_mean_mb: float
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class TargetResult:
    target: str
    scenario: str
    version: str = ""
    startup_s: float | None = None
    idle_rss_mb: float | None = None
    points: list[Point] = field(default_factory=list)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    def point(self, concurrency: int) -> Point | None:
        return next((p for p in self.points if p.concurrency == concurrency), None)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadPlan:
    concurrencies: list[int]
    duration_s: float
    warmup_s: float
    settle_s: float = 1.0  # wait after start-up before reading idle RSS


def sanity_check(server_port: int, target: Target) -> str | None:
    """One real request before the load; returns why the target is unusable, or None."""
    headers = {"Content-Type": "application/json", **dict(h.split(": ", 1) for h in target.headers)}
    if target.key:
        headers["Authorization"] = f"Bearer {target.key}"
    try:
        answer = http_call(server_port, "POST", target.path, BODY.encode(), headers, timeout_s=30)
    except OSError as e:
        return f"first request failed: {e}"
    if answer.status != 200:
        return f"first request answered HTTP {answer.status}: {answer.body[:300]!r}"
    try:
        data = json.loads(answer.body)
    except ValueError:
        return f"first request answered non-JSON: {answer.body[:200]!r}"
    if not isinstance(data, dict) or not data.get("data"):
        return f"first request answered without `data`: {answer.body[:300]!r}"
    return None


def measure_running(server: Server, target: Target, plan: LoadPlan, result: TargetResult) -> None:
    """Load an already healthy server at each concurrency; fills `result.points`."""
    url = f"http://127.0.0.1:{server.port}{target.path}"
    for conc in plan.concurrencies:
        try:
            if plan.warmup_s > 0:
                run_wrk(url, conc, plan.warmup_s, key=target.key, headers=target.headers, body=BODY)
            cpu0 = cpu_seconds(server.pid)
            with RssSampler(server.pid) as sampler:
                res = run_wrk(url, conc, plan.duration_s, key=target.key, headers=target.headers, body=BODY)
            cpu1 = cpu_seconds(server.pid)
        except WrkError as e:
            result.notes.append(f"c={conc}: {e}")
            continue
        if server.proc.poll() is not None:
            result.notes.append(f"c={conc}: server exited with code {server.proc.returncode}")
            break
        result.points.append(Point(
            concurrency=conc,
            requests=res.requests,
            rps=res.rps,
            p50_ms=res.p50_ms,
            p90_ms=res.p90_ms,
            p99_ms=res.p99_ms,
            max_ms=res.max_ms,
            cpu_ms_per_req=(cpu1 - cpu0) * 1000 / res.requests if res.requests else None,
            rss_peak_mb=sampler.summary.peak_bytes / MB,
            rss_mean_mb=sampler.summary.mean_bytes / MB,
            errors=res.errors,
        ))


def measure_target(target: Target, upstream_base: str, scenario: str, plan: LoadPlan,
                   log_dir: Path) -> TargetResult:
    """Start the target, measure it, stop it. Never raises for a target that can't run: says why."""
    result = TargetResult(target.name, scenario, version=target.version)
    if target.skip_reason:
        result.skipped = target.skip_reason
        return result
    try:
        server = target.start(upstream_base, log_dir)
    except (StartError, OSError) as e:
        result.skipped = f"did not start: {e}"
        return result
    try:
        result.startup_s = server.startup_s
        time.sleep(plan.settle_s)
        result.idle_rss_mb = rss_bytes(server.pid) / MB
        problem = sanity_check(server.port, target)
        if problem:
            result.skipped = problem
            return result
        measure_running(server, target, plan, result)
    finally:
        server.stop()
    return result


def measure_direct(fake: Server, scenario: str, plan: LoadPlan) -> TargetResult:
    """The same load straight at the fake upstream (which is already running)."""
    target = Target("direct (fake upstream)", start=lambda _u, _d: fake, key="sk-bench-upstream")
    result = TargetResult(target.name, scenario, startup_s=fake.startup_s, idle_rss_mb=rss_bytes(fake.pid) / MB)
    problem = sanity_check(fake.port, target)
    if problem:
        result.skipped = problem
        return result
    measure_running(fake, target, plan, result)
    return result
