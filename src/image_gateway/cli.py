"""`image-gateway serve | models | check-config | docs | generate | tasks` (generate, tasks: cli_*.py)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import ConfigError, load_config
from .config.describe import describe
from .core.settings import Config


def _load(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    try:
        return load_config(config_path=args.config)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)


def cmd_serve(args: argparse.Namespace) -> int:
    # Workers re-read the config from the environment, so pass the overrides down that way.
    if args.config:
        os.environ["GATEWAY_CONFIG"] = args.config
    if args.host:
        os.environ["HOST"] = args.host
    if args.port:
        os.environ["PORT"] = str(args.port)
    cfg = _load(args)
    import uvicorn

    # X-Forwarded-For/-Proto are trusted only from the proxies named in FORWARDED_ALLOW_IPS (read by
    # uvicorn). Unset, the headers are ignored and the middleware that reads them is left out: it cost
    # about 3% of the CPU per request, and a local process could otherwise spoof its address.
    trust_proxy = bool(os.environ.get("FORWARDED_ALLOW_IPS", "").strip())

    # http: uvicorn's httptools protocol plus a request-header timeout and a connection cap
    # (HEADER_TIMEOUT_S, MAX_CONNECTIONS; see server.py), which uvicorn lacks or answers in plain text.
    # ws="none": no route speaks WebSocket, so an Upgrade request stays a plain HTTP request.
    uvicorn.run(
        "image_gateway.app:create_app", factory=True, host=cfg.host, port=cfg.port, workers=args.workers,
        loop="uvloop", http="image_gateway.server:GatewayProtocol", ws="none", lifespan="on", access_log=False,
        log_config=None,
        server_header=False, timeout_graceful_shutdown=args.grace, backlog=4096, proxy_headers=trust_proxy,
    )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    cfg = _load(args)
    aliases: dict[str, list[str]] = {}
    for a, target in cfg.aliases.items():
        aliases.setdefault(target, []).append(a)
    width = max(len(r) for r in cfg.routes)
    reachable = _probe_self_hosted(cfg)
    for r in cfg.routes.values():
        p = cfg.providers[r.provider]
        ready = "ready" if not p.adapter.capabilities.needs_key or p.api_key else "needs key"
        if reachable.get(r.provider) is False:
            ready = f"unreachable at {p.base_url}"
        extra = f" aliases={','.join(aliases[r.name])}" if r.name in aliases else ""
        print(f"{r.name:<{width}}  {r.provider:<10} upstream={r.upstream_model} [{ready}]{extra}")
    return 0


def _probe_self_hosted(cfg: Config) -> dict[str, bool | None]:
    """Each self-hosted provider's probe (ProviderBase.probe): provider name -> answers or not."""
    import asyncio

    from .providers.base import ProviderBase

    async def run() -> dict[str, bool | None]:
        adapters = {n: p.adapter(p) for n, p in cfg.providers.items() if p.adapter.probe is not ProviderBase.probe}
        try:
            answers = await asyncio.gather(*(a.probe() for a in adapters.values()))
            return dict(zip(adapters, answers, strict=True))
        finally:
            for a in adapters.values():
                await a.close()

    return asyncio.run(run())


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    print(json.dumps(describe(cfg), indent=2, ensure_ascii=False, default=str))
    return 0


def _client_parent() -> argparse.ArgumentParser:
    """Options of the commands that talk to a gateway (generate, tasks)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="YAML config file for in-process mode (else $GATEWAY_CONFIG)")
    common.add_argument("--url", help="a running gateway (else in-process on the local configuration)")
    common.add_argument("--key", help="gateway key, or your own provider key (else $IMAGE_GATEWAY_KEY)")
    common.add_argument("--provider-key", help="sent as X-Provider-Key")
    common.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the gateway")
    return common


def _run_client(args: argparse.Namespace) -> int:
    from .cli_client import CommandError, Target

    key = args.key or os.environ.get("IMAGE_GATEWAY_KEY") or None
    cfg = None
    if not args.url:
        cfg = _load(args)
        if key is None and cfg.gateway_keys:  # in-process on your own config: its own key will do
            key = sorted(cfg.gateway_keys)[0]
    try:
        return int(args.func(args, Target(args.url, key, args.provider_key, args.timeout), cfg))
    except CommandError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="image-gateway", description="OpenAI-compatible image gateway")
    parser.add_argument("--config", help="YAML config file (else $GATEWAY_CONFIG)")
    sub = parser.add_subparsers(dest="cmd")
    serve = sub.add_parser("serve", help="run the gateway (default)")
    serve.add_argument("--config", help="YAML config file (else $GATEWAY_CONFIG)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--grace", type=float, default=30.0, help="seconds running requests get on shutdown")
    for name, help_ in (("models", "print the routes"), ("check-config", "validate and print the config")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="YAML config file (else $GATEWAY_CONFIG)")
    sub.add_parser("docs", help="print or --write .env.example and the README tables (docs --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["docs"]:  # its own options (config/docs.py)
        from .config import docs

        return docs.main(argv[1:])
    if "generate" in argv or "tasks" in argv:
        from . import cli_generate, cli_tasks  # (httpx, tqdm: not loaded for `serve`, whose start-up they'd slow)

        common = _client_parent()
        cli_generate.add_parser(sub, common)
        cli_tasks.add_parser(sub, common)
    else:  # listed in --help all the same
        sub.add_parser("generate", help="generate (or edit) images, with a progress bar")
        sub.add_parser("tasks", help="list, show or cancel async tasks")
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is not None:
        return _run_client(args)
    if not getattr(args, "config", None):
        args.config = None
    cmd = args.cmd or "serve"
    if cmd == "serve" and args.cmd is None:
        args.host, args.port, args.workers, args.grace = None, None, 1, 30.0
    return {"serve": cmd_serve, "models": cmd_models, "check-config": cmd_check_config}[cmd](args)


if __name__ == "__main__":
    sys.exit(main())
