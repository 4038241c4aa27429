"""BFL tasks at scale: N `flux-dev` jobs with `Prefer: respond-async`, every one polled on its own
polling_url (BFL has no batch query), and what that costs the gateway.

The same harness as async_scale.py (Midjourney): tests/upstreams/fake_bfl.py in this process keeps every
task Pending, so all N are in flight and polled at the BFL adapter's interval (1 s unless
`--poll-interval`); the figures are the same (submit rate and latency, RSS, polls per second and per
interval at the fake, event-loop lag). Results go to bench/results/<date>-bfl-async[-every-Ns].{md,json}.

    .venv/bin/python bench/async_bfl.py [--jobs 2000] [--window 15] [--poll-interval 1.0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from async_scale import MjFake, ScaleRun, _first_submit, _scale, summarize
from procstat import rss_bytes
from servers import REPO, StartError
from targets import GATEWAY_BIN, UPSTREAM_KEY, start_gateway

BFL_KEY = "bench-bfl"
RESULTS = Path(__file__).resolve().parent / "results"


def start_bfl_fake(jobs: int) -> MjFake:
    sys.path.insert(0, str(REPO))
    from tests.upstreams import fake_bfl

    server = fake_bfl.start(api_key=BFL_KEY, hang=True, max_active=jobs + 10)
    server.state.max_recorded = 1000
    return MjFake(server, server.state)  # (the same counters: submits, polls, polled_ids)


def run(jobs: int, log_dir: Path, window_s: float, concurrency: int, interval: float | None) -> dict[str, Any]:
    if not GATEWAY_BIN.exists():
        return {"skipped": f"image-gateway is not installed ({GATEWAY_BIN} missing)"}
    fake = start_bfl_fake(jobs)
    notes = ["fake upstream: tests/upstreams/fake_bfl.py in the harness process, tasks hanging Pending; "
             "one GET per task per poll (BFL's get_result takes one id)"]
    env = {"BFL_BASE_URL": fake.url, "BFL_API_KEY": BFL_KEY, "OPENAI_API_KEY": UPSTREAM_KEY}
    if interval is not None:
        config = log_dir / "bfl-scale.yaml"
        config.write_text(f"providers:\n  bfl: {{poll_interval_s: {interval}}}\n")
        env["GATEWAY_CONFIG"] = str(config)
    notes.append(f"poll interval: {interval if interval is not None else 'the adapter default (1 s)'}")
    result = ScaleRun(jobs, concurrency)
    try:
        try:
            server = start_gateway("gateway-bfl-async", 1, log_dir, env)
        except StartError as e:
            return {"skipped": f"gateway did not start: {e}", "notes": notes}
        try:
            result.idle_rss = rss_bytes(server.pid)
            problem = _first_submit(server.port, "flux-dev")
            if problem:
                return {"skipped": problem, "notes": notes}
            asyncio.run(_scale(server, fake, result, window_s, model="flux-dev"))
        finally:
            server.stop()
    finally:
        fake.server.stop()
    return summarize(result, notes)


def write(result: dict[str, Any], argv: list[str], interval: float | None) -> Path:
    day = time.strftime("%Y-%m-%d")
    name = f"{day}-bfl-async" + (f"-every-{interval:g}s" if interval is not None else "")
    md = RESULTS / f"{name}.md"
    lines = [f"# BFL async tasks in flight ({day})", "", f"`.venv/bin/python bench/async_bfl.py {' '.join(argv)}`",
             "", "| figure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result.get("figures", {}).items()]
    lines += ["", *[f"- {n}" for n in result.get("notes", [])]]
    if "skipped" in result:
        lines += ["", f"skipped: {result['skipped']}"]
    md.write_text("\n".join(lines) + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return md


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--window", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--poll-interval", type=float, default=None)
    args = ap.parse_args()
    result = run(args.jobs, Path(tempfile.mkdtemp(prefix="image-gateway-bfl-")), args.window, args.concurrency,
                 args.poll_interval)
    print(write(result, sys.argv[1:], args.poll_interval).read_text())


if __name__ == "__main__":
    main()
