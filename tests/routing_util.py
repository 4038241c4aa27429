"""Shared bits of the routing tests: fake OpenAI upstreams, a config writer, and small HTTP helpers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import httpx

from tests.gateway import GatewayProcess
from tests.waits import wait_until

UPSTREAM_KEY = "sk-upstream-routing-key-0123456789"
ADMIN_KEY = "gw-admin-routing-key-0123456789"


def write_config(path: Path, text: str) -> None:
    """Replace the file atomically, as an editor or a deploy tool does (never a half-written file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def post(gw: GatewayProcess, body: dict[str, Any], headers: dict[str, str] | None = None,
         timeout: float = 30) -> httpx.Response:
    r = httpx.post(gw.base_url + "/images/generations", json=body, headers=headers or {}, timeout=timeout)
    gw.remember(r.text, dict(r.headers))
    return r


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        m = re.match(r"^([^{\s]+)(?:\{([^}]*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return 0.0


def log_events(gw: GatewayProcess, msg: str, wait_s: float = 3.0, **match: Any) -> list[dict[str, Any]]:
    """Log lines with this message (and these fields); waits up to `wait_s` for at least one, since
    lines are written off the event loop and may land just after the response."""
    def found() -> list[dict[str, Any]]:
        return [x for x in gw.log_lines() if x.get("msg") == msg and all(x.get(k) == v for k, v in match.items())]
    try:
        return wait_until(found, wait_s, what=f"log line {msg!r}")
    except AssertionError:
        return []
