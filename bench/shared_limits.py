"""What REDIS_URL costs a rate-limited request: the instant-upstream bench with a per-key rpm limit on,
the gateway in its default mode (limits counted in memory, state in SQLite) beside the same gateway with
REDIS_URL (limits counted by one Lua script in Redis), the plain gateway and the floor, in one run.

    .venv/bin/python bench/shared_limits.py [--quick] [--rounds 3] [--concurrency 1,32]

The Redis-mode target starts its own redis-server inside its process tree, so its CPU ms/req includes
Redis's work as well as the gateway's. Writes bench/results/<date>-shared-limits.md and .json.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

from measure import LoadPlan, Target, median_of_rounds
from report import Run, machine_info, render_markdown, write_results
from run import RESULTS, log, run_scenario
from servers import Server, free_port, start_fake_upstream, start_server
from targets import GATEWAY_BIN, GATEWAY_KEY, UPSTREAM_KEY, floor_target, gateway_env, gateway_version, start_gateway
from wrk import WrkError, ensure_wrk, wrk_version

# The bench key's limit is far above what the machine can send: every request is counted, none refused.
LIMIT_YAML = "limits:\n  keys:\n    - {key: '${BENCH_LIMIT_KEY}', rpm: 100000000}\n"


def _limited_env(upstream: str, log_dir: Path) -> dict[str, str]:
    cfg = Path(tempfile.mkdtemp(prefix="cfg-", dir=log_dir)) / "gateway.yaml"
    cfg.write_text(LIMIT_YAML)
    return {"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": UPSTREAM_KEY, "GATEWAY_CONFIG": str(cfg),
            "BENCH_LIMIT_KEY": GATEWAY_KEY, "CONFIG_WATCH": "0"}


def plain_target() -> Target:
    def start(upstream: str, log_dir: Path) -> Server:
        return start_gateway("gateway plain", 1, log_dir, {"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": UPSTREAM_KEY})

    return Target("gateway (no limit)", start=start, key=GATEWAY_KEY, version=gateway_version())


def local_target() -> Target:
    def start(upstream: str, log_dir: Path) -> Server:
        return start_gateway("gateway local limit", 1, log_dir, _limited_env(upstream, log_dir))

    return Target("gateway, rpm limit in memory (default mode)", start=start, key=GATEWAY_KEY,
                  version=gateway_version())


def redis_target(redis_bin: str) -> Target:
    def start(upstream: str, log_dir: Path) -> Server:
        port, redis_port = free_port(), free_port()
        data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=log_dir))
        redis = [redis_bin, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", "",
                 "--appendonly", "no", "--logfile", str(data_dir / "redis.log")]
        gw = [str(GATEWAY_BIN), "serve", "--port", str(port), "--workers", "1"]
        env = gateway_env(port, data_dir, **_limited_env(upstream, log_dir), REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
                          TASK_OWNER_SECRET="bench-owner-secret-0123456789abcdef")
        # One tree: `sh` starts redis-server, then becomes the gateway (exec), so the tree's CPU is both.
        argv = ["sh", "-c", f"{shlex.join(redis)} & exec {shlex.join(gw)}"]
        return start_server("gateway redis limit", argv, port, env, log_dir, cwd=data_dir)

    return Target("gateway, rpm limit in Redis (REDIS_URL; CPU incl. redis-server)", start=start, key=GATEWAY_KEY,
                  version=gateway_version())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", default="1,32")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    redis_bin = shutil.which("redis-server")
    if redis_bin is None or not GATEWAY_BIN.exists():
        print("bench: needs redis-server and the installed gateway (make test installs both)", file=sys.stderr)
        return 2
    try:
        wrk = ensure_wrk()
    except WrkError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    duration, warmup = (2, 1) if args.quick else (5, 2)
    plan = LoadPlan([int(c) for c in args.concurrency.split(",")], duration, warmup)
    log_dir = Path(tempfile.mkdtemp(prefix="image-gateway-bench-"))
    run = Run(date=time.strftime("%Y-%m-%d"), name="shared-limits",
              command=shlex.join([".venv/bin/python", "bench/shared_limits.py", *argv]), machine=machine_info(),
              settings={"duration_s": duration, "warmup_s": warmup, "concurrency": plan.concurrencies,
                        "workers": [1], "fake_procs": 2, "rounds": args.rounds, "wrk": wrk_version(wrk)})
    targets = [floor_target(), plain_target(), local_target(), redis_target(redis_bin)]
    fake = start_fake_upstream(log_dir, procs=2)
    try:
        title = f"Instant upstream, a per-key rpm limit on, median of {args.rounds} rounds"
        rounds = [run_scenario(f"{title} (round {i + 1})", fake, targets, plan, log_dir) for i in range(args.rounds)]
        run.scenarios[title] = [median_of_rounds([r[i] for r in rounds], title) for i in range(len(rounds[0]))]
    finally:
        fake.stop()
    run.notes.append("The Redis-mode target's CPU ms/req is the gateway's and its redis-server's together "
                     "(one process tree). Its limit is far above the load: every request runs the limit script.")
    md, js = write_results(run, args.out)
    print(render_markdown(run))
    log(f"wrote {md} and {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
