"""Measure one target: start-up, idle RSS, then req/s, latency, CPU and RSS at each concurrency."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from procstat import RssSampler, cpu_seconds, machine_busy_seconds, own_cpu_seconds, rss_bytes
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
    upstream_cpu_ms_per_req: float | None = None
    other_cpu_pct: float | None = None  # machine CPU used by anything but target, upstream, wrk and us
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
    noisy_pct: float = 15.0  # other CPU % above which a point is measured again
    retries: int = 2
    stagger_ms: float = 0.0  # spread each connection's first request over this long (bench/post.lua)


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


def measure_point(server: Server, target: Target, conc: int, plan: LoadPlan, upstream: Server | None) -> Point:
    """Warm up, then one measured wrk run at `conc` connections. Raises WrkError."""
    url = f"http://127.0.0.1:{server.port}{target.path}"
    if plan.warmup_s > 0:
        run_wrk(url, conc, plan.warmup_s, key=target.key, headers=target.headers, body=BODY,
                stagger_ms=plan.stagger_ms)
    up0 = cpu_seconds(upstream.pid) if upstream else 0.0
    cpu0, busy0, own0, t0 = cpu_seconds(server.pid), machine_busy_seconds(), own_cpu_seconds(), time.time()
    with RssSampler(server.pid) as sampler:
        res = run_wrk(url, conc, plan.duration_s, key=target.key, headers=target.headers, body=BODY,
                      stagger_ms=plan.stagger_ms)
    cpu1, busy1, own1, t1 = cpu_seconds(server.pid), machine_busy_seconds(), own_cpu_seconds(), time.time()
    up1 = cpu_seconds(upstream.pid) if upstream else 0.0
    n = res.requests
    other = (busy1 - busy0) - (cpu1 - cpu0) - (up1 - up0) - (own1 - own0)
    return Point(
        concurrency=conc,
        requests=n,
        rps=res.rps,
        p50_ms=res.p50_ms,
        p90_ms=res.p90_ms,
        p99_ms=res.p99_ms,
        max_ms=res.max_ms,
        cpu_ms_per_req=(cpu1 - cpu0) * 1000 / n if n else None,
        rss_peak_mb=sampler.summary.peak_bytes / MB,
        rss_mean_mb=sampler.summary.mean_bytes / MB,
        upstream_cpu_ms_per_req=(up1 - up0) * 1000 / n if n and upstream else None,
        other_cpu_pct=max(0.0, 100 * other / ((os.cpu_count() or 1) * (t1 - t0))),
        errors=res.errors,
    )


def measure_running(server: Server, target: Target, plan: LoadPlan, result: TargetResult,
                    upstream: Server | None = None) -> None:
    """Load an already healthy server at each concurrency; fills `result.points`.

    Besides the target's own CPU, every point records the machine's busy time, so CPU used by
    anything else on the box (a test run, a noisy neighbour) shows up as `other_cpu_pct`. A point
    where that passes `plan.noisy_pct` is measured again, up to `plan.retries` times, and the
    quietest attempt is kept.
    """
    for conc in plan.concurrencies:
        attempts: list[Point] = []
        try:
            while True:
                attempts.append(measure_point(server, target, conc, plan, upstream))
                if (attempts[-1].other_cpu_pct or 0) <= plan.noisy_pct or len(attempts) > plan.retries:
                    break
                time.sleep(1.0)
        except WrkError as e:
            result.notes.append(f"c={conc}: {e}")
        if server.proc.poll() is not None:
            result.notes.append(f"c={conc}: server exited with code {server.proc.returncode}")
            break
        if not attempts:
            continue
        best = min(attempts, key=lambda p: p.other_cpu_pct or 0)
        if len(attempts) > 1:
            others = ", ".join(f"{p.other_cpu_pct or 0:.0f}%" for p in attempts)
            result.notes.append(f"c={conc}: other CPU above {plan.noisy_pct:g}%, measured {len(attempts)} times "
                                f"(other CPU {others}); kept the quietest")
        result.points.append(best)


def measure_target(target: Target, upstream: Server, scenario: str, plan: LoadPlan,
                   log_dir: Path) -> TargetResult:
    """Start the target, measure it, stop it. Never raises for a target that can't run: says why."""
    result = TargetResult(target.name, scenario, version=target.version)
    if target.skip_reason:
        result.skipped = target.skip_reason
        return result
    try:
        server = target.start(f"http://127.0.0.1:{upstream.port}/v1", log_dir)
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
        measure_running(server, target, plan, result, upstream)
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


def median_of_rounds(rounds: list[TargetResult], scenario: str) -> TargetResult:
    """One target measured in several rounds → one result: per concurrency, the round whose CPU
    ms/req is the median (whole points are kept, so a row's figures come from one measurement)."""
    first = rounds[0]
    if len(rounds) == 1 or first.skipped:
        first.scenario = scenario
        return first
    out = TargetResult(first.target, scenario, version=first.version, skipped=first.skipped,
                       notes=[n for r in rounds for n in r.notes])
    starts = sorted(r.startup_s for r in rounds if r.startup_s is not None)
    idles = sorted(r.idle_rss_mb for r in rounds if r.idle_rss_mb is not None)
    out.startup_s = starts[len(starts) // 2] if starts else None
    out.idle_rss_mb = idles[len(idles) // 2] if idles else None
    for p in first.points:
        same = sorted((q for r in rounds for q in r.points if q.concurrency == p.concurrency),
                      key=lambda q: q.cpu_ms_per_req or 0.0)
        out.points.append(same[len(same) // 2])
        cpus = ", ".join(f"{q.cpu_ms_per_req or 0:.3f}" for q in same)
        out.notes.append(f"c={p.concurrency}: median of {len(same)} rounds by CPU ms/req ({cpus})")
    return out
