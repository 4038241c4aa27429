"""Async tasks at scale: submit N Midjourney jobs with `Prefer: respond-async`, then watch the gateway.

Figures: submit rate and latency, gateway RSS before/after/while polling, poll requests the fake
upstream receives per second and per poll interval, and event-loop lag while submitting and while
polling (the gateway's own `gateway_event_loop_lag_seconds` gauge from /metrics when it has one,
otherwise the latency of `GET /health` measured from outside, and the report says which).

The fake (tests/upstreams/fake_mj.py, in this process) keeps every task IN_PROGRESS, and the
gateway gets a config file raising the Midjourney account limits (`concurrency`, `queue_size`,
defaults 3 and 10) to the job count, so all N tasks are in flight upstream and polled.
`--mj-concurrency 0` keeps the defaults: then all but 3 tasks wait inside the gateway.

    .venv/bin/python bench/async_scale.py [--jobs 10000] [--window 15] [--mj-concurrency N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from procstat import rss_bytes
from servers import REPO, Server, StartError, http_call
from targets import GATEWAY_BIN, GATEWAY_KEY, UPSTREAM_KEY, start_gateway

MB = 1024 * 1024
MJ_KEY = "bench-mj"
LAG_GAUGE = re.compile(r"^gateway_event_loop_lag_seconds(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.MULTILINE)


@dataclass
class MjFake:
    server: Any  # tests.upstreams.base.FakeServer
    state: Any  # tests.upstreams.fake_mj.MJState: counters submits, polls, polled_ids

    @property
    def url(self) -> str:
        return str(self.server.url)

    def polls(self) -> int:
        return int(self.state.polls)

    def polled_ids(self) -> int:
        return int(self.state.polled_ids)

    def submits(self) -> int:
        return int(self.state.submits)


def start_mj_fake() -> MjFake:
    """tests/upstreams/fake_mj.py in this process, its tasks hanging IN_PROGRESS so polling goes on."""
    sys.path.insert(0, str(REPO))
    from tests.upstreams import fake_mj

    server = fake_mj.start(hang=True, max_recorded=1000)
    return MjFake(server, server.state)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _submit_all(port: int, jobs: int, concurrency: int, deadline_s: float,
                      model: str = "mj-v7") -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/v1/images/generations"
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Prefer": "respond-async",
               "Content-Type": "application/json"}
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    sample_body = ""
    next_job = iter(range(jobs))
    stop_at = time.perf_counter() + deadline_s

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sample_body
        for i in next_job:
            if time.perf_counter() > stop_at:
                statuses["not sent (deadline)"] += 1
                continue
            body = json.dumps({"model": model, "prompt": f"bench job {i}, a red fox"})
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    text = await resp.text()
                    statuses[str(resp.status)] += 1
                    if resp.status != 202 and not sample_body:
                        sample_body = f"HTTP {resp.status}: {text[:300]}"
            except (aiohttp.ClientError, TimeoutError) as e:
                statuses[type(e).__name__] += 1
                continue
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency), timeout=timeout) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "statuses": dict(statuses), "latencies": latencies, "sample_error": sample_body}


@dataclass
class Watch:
    """What the gateway looked like over one phase."""

    elapsed_s: float = 0.0
    polls: int = 0
    polled_ids: int = 0
    lag_gauge: list[float] = field(default_factory=list)
    health_ms: list[float] = field(default_factory=list)
    health_failures: int = 0
    rss: list[int] = field(default_factory=list)


async def _watch(server: Server, fake: MjFake, *, window_s: float | None = None,
                 stop: asyncio.Event | None = None) -> Watch:
    """Every 0.1 s time `GET /health`; every 1 s read RSS and the lag gauge. Until `stop` or `window_s`."""
    w = Watch()
    polls0, ids0, t0 = fake.polls(), fake.polled_ids(), time.perf_counter()
    base = f"http://127.0.0.1:{server.port}"
    next_second = t0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while not (stop is not None and stop.is_set()) and (window_s is None or time.perf_counter() - t0 < window_s):
            h0 = time.perf_counter()
            try:
                async with session.get(base + "/health") as resp:
                    await resp.read()
                w.health_ms.append((time.perf_counter() - h0) * 1000)
            except (aiohttp.ClientError, TimeoutError):
                w.health_failures += 1
            if time.perf_counter() >= next_second:
                next_second += 1.0
                w.rss.append(rss_bytes(server.pid))
                try:
                    async with session.get(base + "/metrics", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as r:
                        text = await r.text() if r.status == 200 else ""
                    w.lag_gauge += [float(v) for v in LAG_GAUGE.findall(text)]
                except (aiohttp.ClientError, TimeoutError):
                    pass
            await asyncio.sleep(0.1)
    w.elapsed_s = time.perf_counter() - t0
    w.polls, w.polled_ids = fake.polls() - polls0, fake.polled_ids() - ids0
    return w


@dataclass
class ScaleRun:
    jobs: int
    concurrency: int
    idle_rss: int = 0
    after_submit_rss: int = 0
    upstream_after_submit: int = 0
    upstream_at_end: int = 0
    submitted: dict[str, Any] = field(default_factory=dict)
    during_submit: Watch = field(default_factory=Watch)
    polling: Watch = field(default_factory=Watch)


async def _scale(server: Server, fake: MjFake, run: ScaleRun, window_s: float, model: str = "mj-v7") -> None:
    stop = asyncio.Event()
    watcher = asyncio.create_task(_watch(server, fake, stop=stop))
    run.submitted = await _submit_all(server.port, run.jobs - 1, run.concurrency, deadline_s=300, model=model)
    stop.set()
    run.during_submit = await watcher
    run.after_submit_rss = rss_bytes(server.pid)
    run.upstream_after_submit = fake.submits()
    run.polling = await _watch(server, fake, window_s=window_s)
    run.upstream_at_end = fake.submits()


def _first_submit(port: int, model: str = "mj-v7") -> str | None:
    """One job first: returns why async submission doesn't work here, or None."""
    body = json.dumps({"model": model, "prompt": "a red fox"}).encode()
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Prefer": "respond-async", "Content-Type": "application/json"}
    try:
        answer = http_call(port, "POST", "/v1/images/generations", body, headers, timeout_s=30)
    except OSError as e:
        return f"first async submit failed: {e}"
    if answer.status != 202:
        return f"first async submit answered HTTP {answer.status} (want 202): {answer.body[:300]!r}"
    try:
        if not json.loads(answer.body).get("id"):
            return f"202 without a task id: {answer.body[:300]!r}"
    except (ValueError, AttributeError):
        return f"202 with a body that is not a task object: {answer.body[:300]!r}"
    return None


def run_async_scale(jobs: int, log_dir: Path, *, quick: bool = False, window_s: float | None = None,
                    concurrency: int = 64, mj_concurrency: int | None = None) -> dict[str, Any]:
    """Never raises for a missing piece: returns {"skipped": why} instead.

    `mj_concurrency`: the Midjourney account's concurrency and queue_size in the gateway's config
    (default: `jobs`, so every task reaches the upstream); 0 leaves the gateway's defaults.
    """
    if not GATEWAY_BIN.exists():
        return {"skipped": f"image-gateway is not installed ({GATEWAY_BIN} missing)"}
    window = window_s or (6.0 if quick else 15.0)
    limit = jobs if mj_concurrency is None else mj_concurrency
    try:
        fake = start_mj_fake()
    except (ImportError, RuntimeError) as e:
        return {"skipped": f"tests/upstreams/fake_mj.py could not start: {e!r}"}
    notes = ["fake upstream: tests/upstreams/fake_mj.py in the harness process, tasks hanging IN_PROGRESS"]
    env = {"MJ_BASE_URL": fake.url, "MJ_API_KEY": MJ_KEY, "OPENAI_API_KEY": UPSTREAM_KEY}
    if limit > 0:
        config = log_dir / "mj-scale.yaml"
        config.write_text(f"providers:\n  midjourney: {{concurrency: {limit}, queue_size: {limit}}}\n")
        env["GATEWAY_CONFIG"] = str(config)
        notes.append(f"gateway config: providers.midjourney concurrency and queue_size = {limit:,} "
                     "(defaults 3 and 10), so the tasks reach the upstream instead of waiting in the gateway")
    run = ScaleRun(jobs, concurrency)
    try:
        try:
            server = start_gateway("gateway-async", 1, log_dir, env)
        except StartError as e:
            return {"skipped": f"gateway did not start: {e}", "notes": notes}
        try:
            run.idle_rss = rss_bytes(server.pid)
            problem = _first_submit(server.port)
            if problem:
                return {"skipped": problem, "notes": notes}
            asyncio.run(_scale(server, fake, run, window))
        finally:
            server.stop()
    finally:
        fake.server.stop()
    return summarize(run, notes)


def _lag(w: Watch, phase: str, figures: dict[str, str]) -> bool:
    """Adds the lag figure for one phase; returns whether it came from the gateway's own gauge."""
    if w.lag_gauge:
        figures[f"event-loop lag {phase} (gauge) max / median"] = (
            f"{max(w.lag_gauge) * 1000:.1f} / {statistics.median(w.lag_gauge) * 1000:.1f} ms")
    else:
        figures[f"GET /health latency {phase} p50 / p99 / max"] = (
            f"{_pct(w.health_ms, 0.5):.1f} / {_pct(w.health_ms, 0.99):.1f} / {max(w.health_ms or [0]):.1f} ms")
    if w.health_failures:
        figures[f"GET /health failures {phase}"] = str(w.health_failures)
    return bool(w.lag_gauge)


def summarize(run: ScaleRun, notes: list[str]) -> dict[str, Any]:
    sub, poll = run.submitted, run.polling
    lat, statuses = sub["latencies"], sub["statuses"]
    accepted = int(statuses.get("202", 0)) + 1  # + the first, checked job
    secs = poll.elapsed_s or 1.0
    polls_per_s, ids_per_s = poll.polls / secs, poll.polled_ids / secs
    # How often each task is polled, on average: tasks upstream ÷ task ids asked about per second.
    interval = run.upstream_at_end / ids_per_s if ids_per_s else None
    figures: dict[str, str] = {
        "jobs submitted": f"{run.jobs:,} ({run.concurrency} at a time)",
        "accepted (202)": f"{accepted:,}",
        "other answers": ", ".join(f"{k}: {v}" for k, v in statuses.items() if k != "202") or "none",
        "submit rate": f"{len(lat) / sub['elapsed_s']:,.0f} req/s" if sub["elapsed_s"] else "–",
        "submit latency p50 / p99": f"{_pct(lat, 0.5) * 1000:.1f} / {_pct(lat, 0.99) * 1000:.1f} ms",
        "tasks submitted upstream: when submission ended → end of window":
            f"{run.upstream_after_submit:,} → {run.upstream_at_end:,}",
        "gateway RSS idle → after submit → peak while polling":
            f"{run.idle_rss / MB:.0f} → {run.after_submit_rss / MB:.0f} → {max(poll.rss or [0]) / MB:.0f} MB",
        "RSS per accepted task (after submit)": f"{(run.after_submit_rss - run.idle_rss) / accepted / 1024:.1f} KiB",
        f"poll requests at the fake ({poll.elapsed_s:.0f} s window)": f"{poll.polls:,}",
        "poll requests per second": f"{polls_per_s:,.1f}",
        "task ids asked about per second": f"{ids_per_s:,.0f}",
        "mean poll interval per task (tasks upstream ÷ ids/s)": "–" if interval is None else f"{interval:.1f} s",
        "poll requests per poll interval": "–" if interval is None else f"{polls_per_s * interval:,.0f}",
    }
    gauge = _lag(run.during_submit, "while submitting", figures)
    gauge = _lag(poll, "while polling", figures) or gauge
    if not gauge:
        notes.append("no gateway_event_loop_lag_seconds gauge on /metrics: event-loop lag is estimated from "
                     "outside as GET /health latency, sampled every 0.1 s")
    else:
        notes.append("lag: the gateway's gateway_event_loop_lag_seconds gauge, read from /metrics once a second")
    if sub.get("sample_error"):
        notes.append(f"first non-202 answer: {sub['sample_error']}")
    raw = {"statuses": statuses, "submit_elapsed_s": sub["elapsed_s"], "polls": poll.polls,
           "polled_ids": poll.polled_ids, "window_s": poll.elapsed_s, "rss_samples": poll.rss,
           "lag_gauge_submit": run.during_submit.lag_gauge, "lag_gauge_polling": poll.lag_gauge,
           "upstream_submits": run.upstream_at_end}
    return {"figures": figures, "notes": notes, "raw": raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--window", type=float, default=15.0, help="seconds to watch polling after submission")
    ap.add_argument("--concurrency", type=int, default=64, help="submissions in flight")
    ap.add_argument("--mj-concurrency", type=int, help="Midjourney account limits in the gateway (default: jobs; "
                    "0: the gateway's defaults)")
    args = ap.parse_args()
    result = run_async_scale(args.jobs, Path(tempfile.mkdtemp(prefix="image-gateway-async-")),
                             window_s=args.window, concurrency=args.concurrency, mj_concurrency=args.mj_concurrency)
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
