"""Shared tasks at scale (REDIS_URL): N Midjourney tasks in flight over P gateway processes on one Redis.

Figures: total poll requests the fake upstream receives per poll interval (all processes together),
RSS per process, Redis memory per task, and the takeover time after `kill -9` of one process: from
the kill until the survivors hold the poll lease of every task (read from their /metrics
`gateway_task_leases`), beside the target TASK_LEASE_S + one poll interval.

The fake (tests/upstreams/fake_mj.py, in this process) keeps every task IN_PROGRESS; Redis is a
redis-server of its own on a free port (tests/services.py). A short lease and poll interval keep the
run short (defaults: TASK_LEASE_S 3, poll interval 1 s, per-task back-off off).

    .venv/bin/python bench/scale_out_tasks.py [--jobs 10000] [--procs 3] [--lease 3] [--interval 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from async_scale import MJ_KEY, start_mj_fake
from procstat import rss_bytes
from servers import REPO, Server
from targets import GATEWAY_KEY, start_gateway

MB = 1024 * 1024
LEASES = re.compile(r"^gateway_task_leases\s+([0-9.eE+-]+)\s*$", re.MULTILINE)
RESUMED = re.compile(r"^gateway_queue_depth\s+([0-9.eE+-]+)\s*$", re.MULTILINE)  # tasks live in the engine


async def _gauge(session: aiohttp.ClientSession, port: int, gauge: re.Pattern[str]) -> int:
    async with session.get(f"http://127.0.0.1:{port}/metrics",
                           headers={"Authorization": f"Bearer {GATEWAY_KEY}"}) as r:
        m = gauge.search(await r.text())
    return int(float(m.group(1))) if m else -1


async def _gauges(ports: list[int], gauge: re.Pattern[str]) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        return list(await asyncio.gather(*(_gauge(s, p, gauge) for p in ports)))


def _all_leases(ports: list[int]) -> list[int]:
    return asyncio.run(_gauges(ports, LEASES))


async def _submit(ports: list[int], jobs: int, concurrency: int) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {GATEWAY_KEY}", "Prefer": "respond-async",
               "Content-Type": "application/json"}
    statuses: dict[str, int] = {}
    it = iter(range(jobs))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in it:
            port = ports[i % len(ports)]
            body = json.dumps({"model": "mj-v7", "prompt": f"scale-out job {i}"})
            try:
                async with session.post(f"http://127.0.0.1:{port}/v1/images/generations", data=body,
                                        headers=headers) as r:
                    await r.read()
                    statuses[str(r.status)] = statuses.get(str(r.status), 0) + 1
            except (aiohttp.ClientError, TimeoutError) as e:
                statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency),
                                     timeout=aiohttp.ClientTimeout(total=60)) as s:
        await asyncio.gather(*(worker(s) for _ in range(concurrency)))
    return statuses


def _wait(pred: Any, timeout: float, step: float = 0.1) -> float:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError("timed out")
        time.sleep(step)
    return time.monotonic() - t0


def _polls_per_interval(fake: Any, window_s: float, interval_s: float) -> tuple[float, float]:
    p0, i0, t0 = fake.polls(), fake.polled_ids(), time.monotonic()
    time.sleep(window_s)
    dt = time.monotonic() - t0
    return (fake.polls() - p0) / (dt / interval_s), (fake.polled_ids() - i0) / (dt / interval_s)


def run(jobs: int, procs: int, lease_s: float, interval_s: float, window_s: float, log_dir: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    import redis

    from tests.services import RedisServer

    rs = RedisServer(log_dir / "redis").start()
    fake = start_mj_fake()
    config = log_dir / "mj.yaml"
    config.write_text(f"providers:\n  midjourney: {{concurrency: {jobs}, queue_size: {jobs}, "
                      f"poll_interval_s: {interval_s}, poll_backoff_after_s: 0}}\n")
    env = {"MJ_BASE_URL": fake.url, "MJ_API_KEY": MJ_KEY, "REDIS_URL": rs.url, "TASK_LEASE_S": str(lease_s),
           "TASK_OWNER_SECRET": "bench-owner-secret-0123456789abcdef", "GATEWAY_CONFIG": str(config)}
    servers: list[Server] = []
    r = redis.Redis.from_url(rs.url)
    out: dict[str, Any] = {"jobs": jobs, "processes": procs, "TASK_LEASE_S": lease_s, "poll_interval_s": interval_s}
    try:
        servers = [start_gateway(f"gateway-{i}", 1, log_dir, {**env, "GATEWAY_INSTANCE": f"bench-{i}"})
                   for i in range(procs)]
        ports = [s.port for s in servers]
        idle = [rss_bytes(s.pid) for s in servers]
        mem0 = int(r.info("memory")["used_memory"])
        t0 = time.monotonic()
        out["submit answers"] = asyncio.run(_submit(ports, jobs, 64))
        out["submit s"] = round(time.monotonic() - t0, 1)
        _wait(lambda: fake.submits() >= jobs, 120)
        _wait(lambda: sum(_all_leases(ports)) == jobs, 60)
        out["leases per process"] = _all_leases(ports)
        mem1 = int(r.info("memory")["used_memory"])
        out["Redis memory per task (bytes)"] = round((mem1 - mem0) / jobs)
        out["Redis keys"] = int(r.dbsize())
        polls, ids = _polls_per_interval(fake, window_s, interval_s)
        out[f"upstream polls per interval, {procs} processes"] = round(polls, 1)
        out["task ids polled per interval"] = round(ids)
        out["RSS per process idle → polling (MB)"] = [f"{a / MB:.0f} → {rss_bytes(s.pid) / MB:.0f}"
                                                     for a, s in zip(idle, servers, strict=True)]
        victim, survivors = servers[0], servers[1:]
        held = out["leases per process"][0]
        os.killpg(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        out["killed at (wall clock)"] = time.strftime("%H:%M:%S", time.gmtime()) + f"{time.time() % 1:.3f}"[1:]
        victim.proc.wait(5)
        sports = [s.port for s in survivors]
        _wait(lambda: sum(_all_leases(sports)) == jobs, lease_s * 10, step=0.05)
        out[f"takeover after kill -9 ({held} tasks): leases held by the survivors"] = \
            f"{time.monotonic() - killed:.2f} s (target ≤ {lease_s + interval_s:g} s)"
        _wait(lambda: sum(asyncio.run(_gauges(sports, RESUMED))) == jobs, lease_s * 10, step=0.05)
        out["... and every task resumed (polling) on a survivor"] = f"{time.monotonic() - killed:.2f} s"
        out["leases per survivor"] = _all_leases(sports)
        polls, ids = _polls_per_interval(fake, window_s, interval_s)
        out[f"upstream polls per interval, {procs - 1} processes"] = round(polls, 1)
        out["task ids polled per interval, after takeover"] = round(ids)
        out["RSS per survivor after takeover (MB)"] = [f"{rss_bytes(s.pid) / MB:.0f}" for s in survivors]
        out["upstream submits (want = jobs)"] = fake.submits()
    finally:
        for s in servers:
            s.stop()
        fake.server.stop()
        r.close()
        rs.stop()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--lease", type=float, default=3.0, help="TASK_LEASE_S")
    ap.add_argument("--interval", type=float, default=1.0, help="Midjourney poll_interval_s")
    ap.add_argument("--window", type=float, default=8.0, help="seconds to count polls over")
    a = ap.parse_args()
    result = run(a.jobs, a.procs, a.lease, a.interval, a.window, Path(tempfile.mkdtemp(prefix="ig-scale-out-")))
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
