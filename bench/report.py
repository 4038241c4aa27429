"""Turn a run into a Markdown table and JSON under bench/results/, and refresh the README block."""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from measure import TargetResult

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
PEER_C = 32


def machine_info() -> dict[str, str]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "kernel": platform.release(),
    }


@dataclass
class Run:
    date: str
    name: str
    command: str
    machine: dict[str, str]
    settings: dict[str, Any]
    scenarios: dict[str, list[TargetResult]] = field(default_factory=dict)  # scenario title -> results
    peers: list[TargetResult] = field(default_factory=list)
    async_scale: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _f(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in errors.items()) or "0"


def _delta(value: float, base: float | None) -> str:
    return "–" if base is None else f"{value - base:+.2f}"


def load_table(results: list[TargetResult]) -> list[str]:
    """One row per (target, concurrency); latency overhead is this row minus direct at the same c."""
    direct = next((r for r in results if r.target.startswith("direct")), None)
    rows = [
        "| target | c | req/s | p50 ms | p99 ms | p50 − direct | p99 − direct | CPU ms/req | RSS peak MB "
        "| other CPU % | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        if r.skipped:
            rows.append(f"| {r.target} | – | skipped | | | | | | | | see notes |")
            continue
        for p in r.points:
            d = direct.point(p.concurrency) if direct and r is not direct else None
            rows.append(
                f"| {r.target} | {p.concurrency} | {p.rps:,.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} "
                f"| {_delta(p.p50_ms, d.p50_ms if d else None)} | {_delta(p.p99_ms, d.p99_ms if d else None)} "
                f"| {_f(p.cpu_ms_per_req, 3)} | {p.rss_peak_mb:.0f} | {_f(p.other_cpu_pct, 0)} | {_errors(p.errors)} |"
            )
    return rows


def startup_table(results: list[TargetResult]) -> list[str]:
    rows = ["| target | version | start-up to healthy s | idle RSS MB |", "|---|---|---:|---:|"]
    seen: set[str] = set()
    for r in results:
        if r.startup_s is None or r.target in seen:
            continue
        seen.add(r.target)
        rows.append(f"| {r.target} | {r.version or '–'} | {r.startup_s:.2f} | {_f(r.idle_rss_mb, 0)} |")
    return rows


def _notes(results: list[TargetResult]) -> list[str]:
    out: list[str] = []
    for r in results:
        if r.skipped:
            out.append(f"- **{r.target}** ({r.scenario}) skipped: {r.skipped.strip()}")
        out += [f"- {r.target} ({r.scenario}): {n}" for n in r.notes]
    return out


def render_markdown(run: Run) -> str:
    m = run.machine
    s = run.settings
    lines = [
        f"# Benchmark {run.date} {run.name}",
        "",
        f"Reproduce: `{run.command}`",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, Linux {m['kernel']}, {s.get('wrk', 'wrk')}.",
        f"Load: wrk with bench/post.lua, {s['duration_s']:g} s per point after {s['warmup_s']:g} s warm-up; "
        f"fake upstream: {s['fake_procs']} uvloop+httptools processes on one SO_REUSEPORT port.",
        "",
        "CPU ms/req is the target's whole process tree (utime+stime from /proc) over the measured run divided by "
        "the requests served; RSS is the tree's sum, sampled every 0.25 s. wrk, the fake upstream and the target "
        "share the same cores, so req/s is a lower bound on what the target can do alone; CPU ms/req is the "
        "figure that carries over to other machines. \"− direct\" is added latency against the fake upstream "
        "alone at the same concurrency. \"other CPU %\" is the share of the machine's CPU used during the point by "
        "anything but the target, the fake upstream, wrk and the harness: when it is high, another job was "
        "running and that point's req/s and latency are not to be trusted. "
        f"A point above {s.get('noisy_pct', 15):g}% was measured again, up to {s.get('retries', 2)} more times, "
        "keeping the quietest attempt.",
    ]
    all_results: list[TargetResult] = []
    for title, results in run.scenarios.items():
        all_results += results
        lines += ["", f"## {title}", "", *load_table(results)]
    if run.peers:
        all_results += run.peers
        first = next(iter(run.scenarios.values()), [])
        ours = [replace(r, points=[p for p in r.points if p.concurrency == PEER_C]) for r in first]
        lines += ["", f"## Peers at c={PEER_C} (same fast fake upstream, same run)", "",
                  *load_table([r for r in ours if r.points or r.skipped] + run.peers)]
    lines += ["", "## Start-up and idle memory", "", *startup_table(all_results)]
    if run.async_scale is not None:
        lines += ["", "## Async tasks at scale", "", *render_async(run.async_scale)]
    notes = _notes(all_results) + [f"- {n}" for n in run.notes]
    if notes:
        lines += ["", "## Notes", "", *notes]
    return "\n".join(lines) + "\n"


def render_async(a: dict[str, Any]) -> list[str]:
    if a.get("skipped"):
        return [f"Skipped: {a['skipped']}"]
    rows = ["| figure | value |", "|---|---:|"]
    for key, value in a.get("figures", {}).items():
        rows.append(f"| {key} | {value} |")
    return rows + ([""] + [f"- {n}" for n in a.get("notes", [])] if a.get("notes") else [])


def readme_block(run: Run, md_path: Path) -> str:
    """The compact README view: the instant-upstream table at c=32 plus a link to the full file."""
    first = next(iter(run.scenarios.values()), [])
    rows = ["| target | req/s (c=32) | p50 ms | p99 ms | CPU ms/req | idle RSS MB |", "|---|---:|---:|---:|---:|---:|"]
    for r in first + run.peers:
        p = r.point(32)
        if p is None:
            continue
        rows.append(f"| {r.target} | {p.rps:,.0f} | {p.p50_ms:.2f} | {p.p99_ms:.2f} | {_f(p.cpu_ms_per_req, 3)} "
                    f"| {_f(r.idle_rss_mb, 0)} |")
    rel = os.path.relpath(md_path, Path(__file__).resolve().parent.parent)
    rounds = int(run.settings.get("rounds", 1))
    return "\n".join([
        f"Measured {run.date} on {run.machine['nproc']} CPUs ({run.machine['cpu']}); full results: [{rel}]({rel}); "
        f"reproduce with `{run.command}`."
        + (f" Our rows: each target's median of {rounds} rounds (by CPU ms/req)." if rounds > 1 else ""),
        "",
        *rows,
    ])


def write_results(run: Run, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path = out_dir / f"{run.date}-{run.name}.md"
    json_path = md_path.with_suffix(".json")
    md_path.write_text(render_markdown(run))
    json_path.write_text(json.dumps(run.as_dict(), indent=2) + "\n")
    return md_path, json_path


def update_readme(readme: Path, block: str) -> bool:
    """Replace what lies between the bench markers; a README without both markers is left alone."""
    if not readme.is_file():
        return False
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.DOTALL)
    if not pattern.search(text):
        return False
    new = pattern.sub(lambda _m: f"{README_START}\n{block.strip()}\n{README_END}", text, count=1)
    if new != text:
        readme.write_text(new)
    return True
