"""The servers measured side by side: the floor forwarder and the gateway as a user starts it."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from measure import Target
from servers import BENCH, REPO, VENV_PY, Server, base_env, free_port, start_server

GATEWAY_BIN = REPO / ".venv" / "bin" / "image-gateway"
GATEWAY_KEY = "gw-bench-key"
UPSTREAM_KEY = "sk-bench-upstream"


def floor_target() -> Target:
    def start(upstream: str, log_dir: Path) -> Server:
        port = free_port()
        env = base_env(OPENAI_BASE_URL=upstream, OPENAI_API_KEY=UPSTREAM_KEY)
        return start_server("floor", [str(VENV_PY), str(BENCH / "floor_forwarder.py"), "--port", str(port)],
                            port, env, log_dir)

    return Target("floor (aiohttp forwarder)", start=start, key=GATEWAY_KEY, version="bench/floor_forwarder.py")


def gateway_version() -> str:
    done = subprocess.run(
        [str(VENV_PY), "-c", "import importlib.metadata as m; print(m.version('image-gateway'))"],
        capture_output=True, text=True, check=False,
    )
    version = done.stdout.strip() or "?"
    rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         check=False).stdout.strip()
    return f"{version} ({rev})" if rev else f"{version} (uncommitted tree)"


def gateway_env(port: int, data_dir: Path, **extra: str) -> dict[str, str]:
    return base_env(
        GATEWAY_API_KEYS=GATEWAY_KEY,
        HOST="127.0.0.1",
        PORT=str(port),
        DATA_DIR=str(data_dir),
        **extra,
    )


def start_gateway(name: str, workers: int, log_dir: Path, env_extra: dict[str, str]) -> Server:
    """`image-gateway serve --port P --workers N`, run from a fresh data dir (so no stray .env is read)."""
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=log_dir))
    argv = [str(GATEWAY_BIN), "serve", "--port", str(port), "--workers", str(workers)]
    return start_server(name, argv, port, gateway_env(port, data_dir, **env_extra), log_dir, cwd=data_dir)


def gateway_target(workers: int) -> Target:
    name = f"gateway ({workers} worker{'s' if workers > 1 else ''})"

    def start(upstream: str, log_dir: Path) -> Server:
        extra = {"OPENAI_BASE_URL": upstream, "OPENAI_API_KEY": UPSTREAM_KEY}
        if os.environ.get("DEFAULT_RESPONSE_FORMAT"):  # (to measure what the answer form costs)
            extra["DEFAULT_RESPONSE_FORMAT"] = os.environ["DEFAULT_RESPONSE_FORMAT"]
        return start_gateway(name, workers, log_dir, extra)

    skip = None if GATEWAY_BIN.exists() else f"image-gateway is not installed ({GATEWAY_BIN} missing)"
    return Target(name, start=start, key=GATEWAY_KEY, skip_reason=skip,
                  version="" if skip else gateway_version())
