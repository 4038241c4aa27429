"""Where the gateway's CPU goes per request, in instructions counted by valgrind (callgrind).

    .venv/bin/python bench/cost_breakdown.py [--requests 800,2400]

Timing a 5 % change on a shared 2-core VM is hopeless (runs differ by ±10 %); instruction counts
are repeatable to about 0.1 %. Each variant drives the ASGI app in process (no HTTP server, no
wrk: 32 concurrent requests from a driver coroutine) against the fast fake upstream, through the
same aiohttp client the gateway uses, twice under callgrind with different request counts; the
difference ÷ the extra requests is the cost of one request, start-up excluded. Variants:

  minimal    a bare ASGI forwarder (read body, aiohttp POST, relay): the floor of this harness
  gateway    the gateway as built (demo config: OpenAI route, gateway key, access log, metrics)
  no-log     ACCESS_LOG=false
  no-router  respond() calls the provider directly: no router/engine (retries, fallbacks,
             cooldowns, deadlines, attempt metrics)
  parse-only answers right after authenticating and parsing the body (no upstream call)
  limit-mem  the gateway with a per-key rpm limit on the bench key, counted in memory (default mode)
  limit-redis  the same limit with REDIS_URL (a redis-server of its own; its work is not counted here)

Time-based work (the access log's 250 ms flush, the deadline sweeper's 0.1 s tick) is counted
per wall second, and everything runs ~50× slower under valgrind, so those shares are overstated.
Requires valgrind (Debian: `apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

VARIANTS = ("minimal", "gateway", "no-log", "no-router", "parse-only", "limit-mem", "limit-redis")
BODY = b'{"model":"gpt-image-1","prompt":"a red fox"}'
GATEWAY_KEY = "gw-bench-key"
CONCURRENCY = 32


def build_app(variant: str, upstream: str) -> Any:
    """The ASGI app of one variant (imports happen here, in the child process)."""
    if variant == "minimal":
        return _minimal_app(upstream)
    os.environ.update({"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": "sk-bench-upstream",
                       "GATEWAY_API_KEYS": GATEWAY_KEY, "DATA_DIR": tempfile.mkdtemp(prefix="cost-"),
                       "LOG_LEVEL": "WARNING"})
    if variant == "no-log":
        os.environ["ACCESS_LOG"] = "false"
    if variant.startswith("limit-"):
        cfg = Path(tempfile.mkdtemp(prefix="cost-cfg-")) / "gateway.yaml"
        cfg.write_text("limits:\n  keys:\n    - {key: '${BENCH_LIMIT_KEY}', rpm: 100000000}\n")
        os.environ.update({"GATEWAY_CONFIG": str(cfg), "BENCH_LIMIT_KEY": GATEWAY_KEY, "CONFIG_WATCH": "0"})
        if variant == "limit-redis":
            os.environ.update({"REDIS_URL": os.environ["COST_REDIS_URL"],
                               "TASK_OWNER_SECRET": "bench-owner-secret-0123456789abcdef"})
    from image_gateway.api import images
    from image_gateway.app import create_app

    if variant == "no-router":
        async def respond(request: Any, rt: Any, route: Any, req: Any, keys: Any) -> Any:
            state = request.scope["state"]
            router = rt.router
            deadline = asyncio.get_running_loop().time() + router.deadline_s(route)
            ctx = router._ctx(route, router.pool.deployments(route)[0], keys, state["request_id"], deadline)
            result = await router.provider_of(route).complete(req, ctx)
            body = await images.finish(request, rt, req, result)
            return images.JSONBytes(images.encode(body), 200, images._served(request, route))

        images.respond = respond
    elif variant == "parse-only":
        async def handle(request: Any, op: Any) -> Any:
            rt = request.app.state.rt
            images.authenticate(request, rt.cfg)
            _, route = await images.parse(request, rt, op)
            return images.JSONBytes(b'{"created":1,"data":[]}', 200, images._served(request, route))

        images.handle = handle
    return create_app()


def _minimal_app(upstream: str) -> Any:
    import aiohttp

    url = upstream + "/images/generations"
    headers = {"Authorization": "Bearer sk-bench-upstream", "Content-Type": "application/json"}
    session: list[aiohttp.ClientSession] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = (await receive())["body"]
        async with session[0].post(url, data=body, headers=headers) as r:
            data = await r.read()
        await send({"type": "http.response.start", "status": r.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
        await send({"type": "http.response.body", "body": data})

    return app


async def drive(app: Any, requests: int) -> None:
    """Lifespan start-up, a warm-up, then `requests` POSTs, CONCURRENCY at a time."""
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                       startup.get, started.put))
    await started.get()
    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"authorization", f"Bearer {GATEWAY_KEY}".encode()), (b"content-length", b"%d" % len(BODY))]

    async def one() -> None:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/images/generations", "raw_path": b"/v1/images/generations",
                 "query_string": b"", "root_path": "", "headers": headers, "client": ("127.0.0.1", 5555),
                 "server": ("127.0.0.1", 80)}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": BODY, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(scope, receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"request failed: {sent}")

    async def worker(n: int) -> None:
        for _ in range(n):
            await one()

    await worker(200)
    await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    await startup.put({"type": "lifespan.shutdown"})
    await lifespan


def instructions(variant: str, requests: int, upstream: str) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    cmd = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
           "--child", variant, "--requests", str(requests), "--upstream", upstream]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    m = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or m is None:
        raise SystemExit(f"{variant}: callgrind run failed:\n{done.stderr[-2000:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", default="800,2400", help="the two request counts, e.g. 800,2400")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--upstream", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        import uvloop

        uvloop.run(drive(build_app(args.child, args.upstream), int(args.requests)))
        return 0
    low, high = (int(x) for x in args.requests.split(","))

    from servers import start_fake_upstream

    work = Path(tempfile.mkdtemp(prefix="cost-breakdown-"))
    fake = start_fake_upstream(work, procs=1)
    redis = None
    if "limit-redis" in args.variants:
        from servers import free_port

        port = free_port()
        redis = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
        os.environ["COST_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    try:
        upstream = f"http://127.0.0.1:{fake.port}/v1"
        per: dict[str, float] = {}
        for v in args.variants.split(","):
            per[v] = (instructions(v, high, upstream) - instructions(v, low, upstream)) / (high - low)
            print(f"{v:11} {per[v]:10,.0f} instructions per request", flush=True)
    finally:
        fake.stop()
        if redis is not None:
            redis.terminate()
    if {"gateway", "minimal"} <= per.keys():
        gw = per["gateway"]
        print(f"\ngateway's own work: {gw - per['minimal']:,.0f} per request "
              f"({(gw - per['minimal']) / gw:.0%} of the gateway's total in this harness)")
        for v, what in (("no-log", "access log"), ("no-router", "router + engine")):
            if v in per:
                print(f"  {what:16} {gw - per[v]:9,.0f}  ({(gw - per[v]) / gw:.1%})")
        if "parse-only" in per:
            print(f"  {'up to parsing':16} {per['parse-only']:9,.0f}  (middleware, auth, body parse; no upstream)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
