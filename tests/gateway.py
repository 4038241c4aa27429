"""Starts the real gateway as a separate process, exactly as a user would, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from tests.waits import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """`python -m image_gateway serve` in its own working dir, with a clean environment.

    Only the variables given reach the process (no OPENAI_API_KEY leaking in from outside).
    Its stdout/stderr go to `log_path`; `data_dir` is its DATA_DIR. `seen` collects response
    texts a test wants included in the key-hygiene check.
    """

    def __init__(self, workdir: Path, env: dict[str, str] | None = None, config_yaml: str | None = None,
                 args: Iterable[str] = (), port: int | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.data_dir = workdir / "data"
        self.log_path = workdir / "gateway.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(workdir),
            "PYTHONUNBUFFERED": "1",
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "DATA_DIR": str(self.data_dir),
            **(env or {}),
        }
        if config_yaml is not None:
            cfg = workdir / "gateway.yaml"
            cfg.write_text(config_yaml)
            self.env["GATEWAY_CONFIG"] = str(cfg)
        self.args = list(args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def start(self, timeout: float = 15.0) -> GatewayProcess:
        # A free port can be taken by another test's gateway before ours binds it: then /health would
        # answer from that one. Each start gets its own instance label, checked on /health, and a
        # lost port race is retried on a new port.
        for _ in range(3):
            if self._start_once(timeout):
                return self
            self.port = free_port()
            self.env["PORT"] = str(self.port)
        raise RuntimeError(f"gateway could not bind a port:\n{self.logs()}")

    def _start_once(self, timeout: float) -> bool:
        instance = f"test-{os.urandom(6).hex()}"
        self.env["GATEWAY_INSTANCE"] = instance
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "image_gateway", "serve", *self.args],
            cwd=self.workdir, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        proc = self.proc

        def settled() -> str:  # "up", "port taken", or "" (not yet)
            if proc.poll() is not None:
                if "address already in use" in self.logs().lower():
                    return "port taken"
                raise RuntimeError(f"gateway exited with {proc.returncode}:\n{self.logs()}")
            try:
                r = httpx.get(self.url + "/health", timeout=0.5)
                return "up" if r.status_code == 200 and r.json().get("instance") == instance else ""
            except (httpx.HTTPError, ValueError):
                return ""

        try:
            return wait_until(settled, timeout, interval=0.05, what="the gateway to become healthy") == "up"
        except AssertionError:
            raise RuntimeError(f"gateway did not become healthy:\n{self.logs()}") from None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def logs(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[dict[str, Any]]:
        import json

        out = []
        for line in self.logs().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def remember(self, *texts: Any) -> None:
        for t in texts:
            self.seen.append(t if isinstance(t, str) else repr(t))

    def assert_secret_absent(self, *secrets: str, extra_texts: Iterable[str] = ()) -> None:
        """The key is in no log line, no file under the work dir (data, sqlite...), no response seen."""
        texts = [self.logs(), *self.seen, *extra_texts]
        for secret in secrets:
            assert secret, "empty secret"
            for t in texts:
                assert secret not in t, f"secret {secret[:6]}... leaked into a log or response"
            for root, _dirs, files in os.walk(self.workdir):
                for name in files:
                    p = Path(root) / name
                    if p == self.log_path or name == "gateway.yaml":
                        continue
                    data = p.read_bytes()
                    assert secret.encode() not in data, f"secret {secret[:6]}... written to {p}"
