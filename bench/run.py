"""Benchmark the gateway against the floor forwarder and the bare fake upstream, in one run.

    .venv/bin/python bench/run.py [--quick] [--peers] [--workers 1,2] [--async-jobs 10000]

Writes bench/results/<date>-<name>.md and .json, and refreshes the README block between
`<!-- bench:start -->` and `<!-- bench:end -->` when both markers exist (full runs only, or --readme).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import peers
from measure import LoadPlan, Target, TargetResult, measure_direct, measure_target, median_of_rounds
from report import Run, machine_info, readme_block, render_markdown, update_readme, write_results
from servers import REPO, Server, StartError, start_fake_upstream
from targets import GATEWAY_BIN, floor_target, gateway_target
from wrk import WrkError, ensure_wrk, wrk_version

RESULTS = REPO / "bench" / "results"


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 s points, 1 s warm-up, 1,000 async jobs")
    ap.add_argument("--peers", action="store_true", help="add LiteLLM and Portkey at concurrency 32")
    ap.add_argument("--peers-only", action="store_true", help="only the c=32 comparison with the peers")
    ap.add_argument("--workers", type=_ints, default=[1, 2], help="gateway worker counts, e.g. 1,2")
    ap.add_argument("--concurrency", type=_ints, default=[1, 32, 256])
    ap.add_argument("--duration", type=int, help="whole seconds per point (default 5, quick 2)")
    ap.add_argument("--warmup", type=int, help="warm-up seconds before each point (default 2, quick 1)")
    ap.add_argument("--fake-procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, help="rounds of the instant-upstream scenario, targets taking turns; "
                    "each row is the median round (default 3, quick 1)")
    ap.add_argument("--slow-delay", type=float, default=1.0, help="upstream delay for the in-flight scenario; 0=off")
    ap.add_argument("--async-jobs", type=int, help="async tasks to submit (default 10000, quick 1000; 0=off)")
    ap.add_argument("--retries", type=int, default=2,
                    help="re-measure a noisy point (see --noisy-pct) up to this many times")
    ap.add_argument("--noisy-pct", type=float, default=15.0, help="other-CPU %% that makes a point noisy")
    ap.add_argument("--name", help="results file name after the date (default: full, quick or peers)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--readme", action=argparse.BooleanOptionalAction, default=None,
                    help="refresh the README block (default: on for full runs)")
    args = ap.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 5)
    args.rounds = max(1, args.rounds or (1 if args.quick else 3))
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if args.async_jobs is None:
        args.async_jobs = 1000 if args.quick else 10_000
    if args.peers_only:
        args.peers, args.concurrency, args.workers, args.slow_delay, args.async_jobs = True, [32], [1], 0, 0
    if not args.name:
        base = "quick" if args.quick else "full"
        args.name = "peers" if args.peers_only else base + ("-peers" if args.peers else "")
    return args


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_scenario(title: str, fake: Server, targets: list[Target], plan: LoadPlan, log_dir: Path) -> list[TargetResult]:
    log(f"{title}: direct at c={plan.concurrencies}")
    results = [measure_direct(fake, title, plan)]
    for target in targets:
        log(f"{title}: {target.name}" + (f" (skipped: {target.skip_reason})" if target.skip_reason else ""))
        results.append(measure_target(target, fake, title, plan, log_dir))
    for r in results:
        for p in r.points:
            log(f"  {r.target:28} c={p.concurrency:<4} {p.rps:9,.0f} req/s  p50 {p.p50_ms:7.2f} ms  "
                f"p99 {p.p99_ms:7.2f} ms  cpu {p.cpu_ms_per_req or 0:.3f} ms/req  other {p.other_cpu_pct or 0:.0f}%  "
                f"errors {p.errors or 0}")
        if r.skipped:
            log(f"  {r.target}: skipped: {r.skipped.splitlines()[0]}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    try:
        wrk = ensure_wrk()
    except WrkError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    log_dir = Path(tempfile.mkdtemp(prefix="image-gateway-bench-"))
    log(f"logs and data dirs under {log_dir}")
    script = "bench/peers.py" if args.peers_only else "bench/run.py"
    shown = [a for a in argv if a != "--peers-only"]
    run = Run(
        date=time.strftime("%Y-%m-%d"),
        name=args.name,
        command=shlex.join([".venv/bin/python", script, *shown]),
        machine=machine_info(),
        settings={
            "duration_s": args.duration, "warmup_s": args.warmup, "concurrency": args.concurrency,
            "workers": args.workers, "fake_procs": args.fake_procs, "slow_delay_s": args.slow_delay,
            "async_jobs": args.async_jobs, "wrk": wrk_version(wrk), "noisy_pct": args.noisy_pct, "rounds": args.rounds,
            "retries": args.retries,
        },
    )
    plan = LoadPlan(args.concurrency, args.duration, args.warmup, noisy_pct=args.noisy_pct, retries=args.retries)
    targets = [floor_target(), *(gateway_target(n) for n in args.workers)]
    if not GATEWAY_BIN.exists():
        run.notes.append(f"The gateway column is empty: {GATEWAY_BIN} does not exist yet (install the package).")

    fake = start_fake_upstream(log_dir, procs=args.fake_procs)
    try:
        title = f"Instant upstream (fake answers at once; {args.fake_procs} processes)"
        if args.rounds > 1:
            title += f", median of {args.rounds} rounds"
        # On a shared VM one target's CPU ms/req moves by ±10% from minute to minute: the targets take
        # turns for several rounds, and each row is its median round.
        rounds = [run_scenario(f"{title} (round {i + 1})", fake, targets, plan, log_dir) for i in range(args.rounds)]
        run.scenarios[title] = [median_of_rounds([r[i] for r in rounds], title) for i in range(len(rounds[0]))]
        if args.peers:
            log("peers: LiteLLM proxy and Portkey gateway at c=32")
            peer_plan = replace(plan, concurrencies=[32])
            for target in peers.peer_targets(log_dir):
                log(f"peers: {target.name}" + (f" (skipped: {target.skip_reason})" if target.skip_reason else ""))
                res = measure_target(target, fake, "peers", peer_plan, log_dir)
                run.peers.append(res)
                for p in res.points:
                    log(f"  {res.target:28} c=32 {p.rps:9,.0f} req/s  p50 {p.p50_ms:.2f} ms  p99 {p.p99_ms:.2f} ms  "
                        f"cpu {p.cpu_ms_per_req or 0:.3f} ms/req")
                if res.skipped:
                    log(f"  skipped: {res.skipped.splitlines()[0]}")
    finally:
        fake.stop()

    if args.slow_delay > 0:
        try:
            slow = start_fake_upstream(log_dir, procs=1, delay_s=args.slow_delay)
        except StartError as e:
            run.notes.append(f"slow upstream did not start: {e}")
        else:
            try:
                # wrk takes whole seconds: 5 or 10 upstream round trips, so each connection completes
                # rounds-1 requests whether the target adds 1 ms or 100 ms (req/s ≈ c × (rounds-1)/window).
                rounds = 5 if args.quick else 10
                slow_plan = replace(plan, concurrencies=[max(args.concurrency)],
                                    duration_s=max(1, round(rounds * args.slow_delay)),
                                    stagger_ms=args.slow_delay * 1000)
                # Twice: connections that start spread over one upstream delay, as independent clients
                # do (what holding requests in flight costs), then all at the same instant (wrk's
                # default: the measured window then opens with one burst of `c` requests, and its
                # tail is how long the target takes to work through that burst).
                title = (f"Slow upstream (fake answers after {args.slow_delay:g} s): requests in flight, "
                         f"connections starting spread over {args.slow_delay:g} s")
                run.scenarios[title] = run_scenario(title, slow, targets, slow_plan, log_dir)
                title = (f"Slow upstream (fake answers after {args.slow_delay:g} s): requests in flight, "
                         "all connections starting at once")
                run.scenarios[title] = run_scenario(title, slow, targets, replace(slow_plan, stagger_ms=0.0),
                                                    log_dir)
            finally:
                slow.stop()

    if args.async_jobs > 0:
        import async_scale

        log(f"async scale: {args.async_jobs} Midjourney jobs with Prefer: respond-async")
        run.async_scale = async_scale.run_async_scale(args.async_jobs, log_dir, quick=args.quick)

    md_path, json_path = write_results(run, args.out)
    print()
    print(render_markdown(run))
    log(f"wrote {_shown(md_path)} and {_shown(json_path)}")
    if args.readme if args.readme is not None else not (args.quick or args.peers_only):
        if update_readme(REPO / "README.md", readme_block(run, md_path)):
            log("refreshed the README block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
