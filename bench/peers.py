"""The peer column: LiteLLM's proxy (PyPI) and Portkey's gateway (npm) against the same fast fake.

    .venv/bin/python bench/peers.py [--quick]      # same as run.py --peers-only

Each peer is installed on first use into bench/.peers/ (gitignored), pinned to the version below.
A peer that cannot be installed or started here is reported with the reason instead of failing
the run.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from measure import Target
from servers import BENCH, Server, StartError, base_env, free_port, start_server
from targets import GATEWAY_KEY, UPSTREAM_KEY

PEERS = BENCH / ".peers"
# 1.107+ moved the proxy into a separate `litellm-proxy` package (not on every index); 1.107.0 itself
# was a compromised release. 1.106.12 is the last release with the proxy in the main package.
LITELLM_VERSION = "1.106.12"
PORTKEY_VERSION = "1.15.2"
INSTALL_TIMEOUT_S = 15 * 60

LITELLM_VENV = PEERS / "litellm-venv"
LITELLM_BIN = LITELLM_VENV / "bin" / "litellm"
PORTKEY_DIR = PEERS / "portkey"
PORTKEY_JS = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
LITELLM_KEY = "sk-" + GATEWAY_KEY  # LiteLLM insists that a master key starts with sk-


class PeerUnavailable(StartError):
    pass


def _run_logged(cmd: list[str], log: Path, cwd: Path | None = None) -> None:
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        try:
            done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, timeout=INSTALL_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"`{' '.join(cmd)}` timed out after {INSTALL_TIMEOUT_S}s (log: {log})") from None
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise PeerUnavailable(f"`{' '.join(cmd)}` failed ({done.returncode}): {' | '.join(tail)}")


def _installed_litellm() -> str | None:
    if not LITELLM_BIN.exists():
        return None
    done = subprocess.run([str(LITELLM_VENV / "bin" / "python"), "-c",
                           "import importlib.metadata as m; print(m.version('litellm'))"],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def ensure_litellm() -> str:
    """Install `litellm[proxy]` into its own venv when missing or at another version; returns the version."""
    if _installed_litellm() == LITELLM_VERSION:
        return LITELLM_VERSION
    PEERS.mkdir(parents=True, exist_ok=True)
    log = PEERS / "litellm-install.log"
    if not (LITELLM_VENV / "bin" / "pip").exists():
        _run_logged([sys.executable, "-m", "venv", str(LITELLM_VENV)], log)
    _run_logged([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], log)
    version = _installed_litellm()
    if version is None:
        raise PeerUnavailable(f"litellm installed but {LITELLM_BIN} is missing")
    return version


def ensure_portkey() -> str:
    """`npm install @portkey-ai/gateway` into bench/.peers/portkey when missing; returns the version."""
    node = shutil.which("node")
    npm = shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node/npm not installed (apt-get install -y nodejs npm)")
    package = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "package.json"
    wanted = f'"version": "{PORTKEY_VERSION}"'
    if not (PORTKEY_JS.exists() and wanted in package.read_text()):
        PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
        if not (PORTKEY_DIR / "package.json").exists():
            (PORTKEY_DIR / "package.json").write_text('{"name": "bench-portkey", "private": true}\n')
        _run_logged([npm, "install", "--no-audit", "--no-fund", f"@portkey-ai/gateway@{PORTKEY_VERSION}"],
                    PEERS / "portkey-install.log", cwd=PORTKEY_DIR)
    if not PORTKEY_JS.exists():
        raise PeerUnavailable(f"npm install finished but {PORTKEY_JS} is missing")
    return PORTKEY_VERSION


def _installed_target(name: str, key: str, what: str, version: Callable[[], str]) -> Target:
    """A peer target with its install done (or the reason it could not be, so the run skips it)."""
    target = Target(name, start=lambda _u, _d: _never(), key=key)
    try:
        target.version = version()
    except PeerUnavailable as e:
        target.skip_reason = f"could not install {what}: {e}"
    return target


def litellm_target() -> Target:
    target = _installed_target("LiteLLM proxy", LITELLM_KEY, "LiteLLM", lambda: f"litellm {ensure_litellm()}")
    if target.skip_reason:
        return target

    def start(upstream: str, log_dir: Path) -> Server:
        port = free_port()
        config = log_dir / "litellm-config.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gpt-image-1\n"
            "    litellm_params:\n"
            "      model: openai/gpt-image-1\n"
            f"      api_base: {upstream}\n"
            f"      api_key: {UPSTREAM_KEY}\n"
            "general_settings:\n"
            f"  master_key: {LITELLM_KEY}\n"
        )
        env = base_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION")
        argv = [str(LITELLM_BIN), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                "--num_workers", "1"]
        return start_server("litellm", argv, port, env, log_dir, health_path="/health/liveliness", timeout_s=180)

    target.start = start
    return target


def portkey_target() -> Target:
    target = _installed_target("Portkey gateway", UPSTREAM_KEY, "Portkey",
                               lambda: f"@portkey-ai/gateway {ensure_portkey()}, node {_node_version()}")
    if target.skip_reason:
        return target

    def start(upstream: str, log_dir: Path) -> Server:
        port = free_port()
        # Portkey takes the provider and upstream from headers on every request.
        target.headers = ["x-portkey-provider: openai", f"x-portkey-custom-host: {upstream}"]
        argv = [shutil.which("node") or "node", str(PORTKEY_JS), f"--port={port}", "--headless"]
        return start_server("portkey", argv, port, base_env(NODE_ENV="production"), log_dir, health_path="/",
                            timeout_s=60)

    target.start = start
    return target


def _node_version() -> str:
    return subprocess.run(["node", "-v"], capture_output=True, text=True, check=False).stdout.strip()


def _never() -> Server:
    raise PeerUnavailable("not started")


def peer_targets(log_dir: Path) -> list[Target]:
    """Install (first time) and describe both peers; installing can take minutes."""
    t0 = time.perf_counter()
    targets = [litellm_target(), portkey_target()]
    print(f"[bench] peers ready in {time.perf_counter() - t0:.0f}s", flush=True)
    return targets


if __name__ == "__main__":
    import run

    sys.exit(run.main(["--peers-only", *sys.argv[1:]]))
