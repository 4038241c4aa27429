"""Start and stop the servers under test, each in its own process group, and talk to them once.

Every server's output goes to a log file (a pipe nobody reads would fill and stall it); when a
server fails to come up, the tail of that log is the reason the report shows.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
VENV_PY = REPO / ".venv" / "bin" / "python"

# The environment a server starts with: the bare minimum from ours, plus what each target sets.
_PASS_THROUGH = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TERM")


class StartError(RuntimeError):
    pass


def base_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class HttpAnswer:
    status: int
    body: bytes
    elapsed_s: float
    headers: dict[str, str] = field(default_factory=dict)


def http_call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
) -> HttpAnswer:
    """One request on a fresh connection; raises OSError when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    t0 = time.perf_counter()
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return HttpAnswer(resp.status, data, time.perf_counter() - t0, {k.lower(): v for k, v in resp.getheaders()})
    finally:
        conn.close()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the process group we created, SIGKILL if it lingers."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        except ProcessLookupError:
            pass


def start_server(
    name: str,
    argv: list[str],
    port: int,
    env: dict[str, str],
    log_dir: Path,
    *,
    health_path: str = "/health",
    timeout_s: float = 60.0,
    cwd: Path | None = None,
) -> Server:
    """Start `argv` and wait until `GET health_path` answers 200; `startup_s` is that wait."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name.replace(' ', '_').replace('/', '_')}.log"
    with log_path.open("wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd or REPO, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Server(name, proc, port, log_path)
    deadline = t0 + timeout_s
    last = "no answer"
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise StartError(f"{name} exited with code {proc.returncode} before it was healthy:\n"
                             f"{server.log_tail()}")
        try:
            answer = http_call(port, "GET", health_path, timeout_s=2.0)
            if answer.status == 200:
                server.startup_s = time.perf_counter() - t0
                return server
            last = f"HTTP {answer.status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.02)
    server.stop()
    raise StartError(f"{name} not healthy after {timeout_s:g}s ({last}):\n{server.log_tail()}")


def start_fake_upstream(log_dir: Path, *, procs: int, delay_s: float = 0.0) -> Server:
    port = free_port()
    argv = [str(VENV_PY), str(BENCH / "fake_upstream.py"), "--port", str(port), "--procs", str(procs)]
    if delay_s:
        argv += ["--delay", str(delay_s)]
    name = f"fake-upstream-{'delay' if delay_s else 'instant'}"
    return start_server(name, argv, port, base_env(), log_dir)
