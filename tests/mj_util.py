"""Helpers for the Midjourney / task tests: the fake proxy, a gateway pointed at it, pixel checks."""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import openai
from PIL import Image

from tests.gateway import GatewayProcess
from tests.upstreams import fake_mj
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_mj import MJState
from tests.waits import wait_until

STEP = 0.1  # fake task lifecycle step
POLL = 0.1  # gateway poll interval
Color = tuple[int, int, int]


def new_key() -> str:
    return "mj-" + secrets.token_hex(12)


@contextmanager
def mj_server(**options: Any) -> Iterator[tuple[FakeServer, MJState]]:
    options.setdefault("step_s", STEP)
    srv = fake_mj.start(**options)
    try:
        state = srv.state
        assert isinstance(state, MJState)
        yield srv, state
    finally:
        srv.stop()


def mj_yaml(provider: str = "", routes: str = "") -> str:
    """Provider options for fast tests, plus any extra provider options / routes."""
    opts = f"poll_interval_s: {POLL}, concurrency: 16, queue_size: 16"
    if provider:
        opts += ", " + provider
    out = f"providers:\n  midjourney: {{{opts}}}\n"
    if routes:
        out += "routes:\n" + routes
    return out


def start_gateway(factory: Callable[..., GatewayProcess], srv: FakeServer, key: str | None,
                  provider: str = "", routes: str = "", env: dict[str, str] | None = None) -> GatewayProcess:
    e = {"MJ_BASE_URL": srv.url, **(env or {})}
    if key:
        e["MJ_API_KEY"] = key
    return factory(env=e, config_yaml=mj_yaml(provider, routes))


def client(gw: GatewayProcess, api_key: str = "caller", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=api_key, max_retries=0, timeout=30, **kw)


def image_of(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img.convert("RGB")


def solid(img: Image.Image) -> Color:
    """The one colour of a uniform image (fails if it is not uniform)."""
    colors = img.getcolors(maxcolors=4)
    assert colors is not None and len(colors) == 1, f"not a solid image: {colors}"
    c = colors[0][1]
    assert isinstance(c, tuple)
    return (c[0], c[1], c[2])


def release(state: MJState) -> None:
    """Let hung fake tasks (and those submitted from now on) run to success."""
    state.hang = False
    for t in state.tasks.values():
        t.outcome = "S"


def submitted_prompts(state: MJState) -> list[str]:
    return [r.json["prompt"] for r in state.requests if r.path.endswith("/submit/imagine") and r.json]


def imagine_ids(state: MJState) -> list[str]:
    return [t.id for t in state.tasks.values() if t.action == "IMAGINE"]


def wait_task(gw: GatewayProcess, task_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 15,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    def there() -> dict[str, Any] | None:
        r = httpx.get(f"{gw.base_url}/images/tasks/{task_id}", headers=headers or {}, timeout=10)
        assert r.status_code == 200, r.text
        gw.remember(r.text)
        task: dict[str, Any] = r.json()
        return task if until(task) else None

    task = wait_until(there, timeout, interval=0.05, what=f"task {task_id}")
    assert task is not None
    return task


def done(task: dict[str, Any]) -> bool:
    return task["status"] in ("succeeded", "failed", "cancelled")


def submit_async(gw: GatewayProcess, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    r = httpx.post(f"{gw.base_url}/images/generations", json=body,
                   headers={"Prefer": "respond-async", **(headers or {})}, timeout=10)
    gw.remember(r.text)
    assert r.status_code == 202, r.text
    task: dict[str, Any] = r.json()
    return task
