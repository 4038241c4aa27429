"""Input images of a queued async edit with REDIS_URL: kept in Redis (not in the accepting process's
DATA_DIR), so the process that takes the task over after a kill -9 submits it with its image. Real
processes, a real redis-server, the fake midjourney-proxy."""

from __future__ import annotations

import base64
import io
from typing import Any

import httpx
import redis
from PIL import Image

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.mj_util import done, mj_server, new_key, release, submit_async, wait_task
from tests.test_scale_out_tasks import LEASE_S, assert_no_key_anywhere, fleet, leases
from tests.waits import wait_until

DEADLINE_S = 600.0  # JOB_DEADLINE_S default: the inputs expire at most this plus a margin from now


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def _edit(gw: GatewayProcess, prompt: str, png: bytes) -> httpx.Response:
    r = httpx.post(f"{gw.base_url}/images/edits", headers={"Prefer": "respond-async"}, timeout=10,
                   data={"model": "mj-v7", "prompt": prompt}, files={"image": ("ref.png", png, "image/png")})
    gw.remember(r.text)
    return r


def test_a_queued_edit_taken_over_after_kill_9_reaches_the_upstream_with_its_image(
        gateway: GatewayFactory, redis_server: Any) -> None:
    key = new_key()
    png, other_png = _png((9, 8, 7)), _png((1, 2, 3))
    raw: Any = redis.Redis.from_url(redis_server.url)
    with mj_server(hang=True, secret=key) as (srv, state):
        (a,) = fleet(gateway, 1, srv, key, redis_server.url, concurrency=1)  # one upstream slot on A
        (b,) = fleet(gateway, 1, srv, key, redis_server.url)
        first = submit_async(a, {"model": "mj-v7", "prompt": "holds the slot"})
        wait_until(lambda: state.submits == 1, 10, what="the first task upstream, holding A's slot")
        r = _edit(a, "in this style", png)
        assert r.status_code == 202, r.text
        edit = r.json()
        r = _edit(a, "never sent", other_png)
        assert r.status_code == 202, r.text
        dropped = r.json()
        for t in (edit, dropped):  # waiting for A's slot: never sent
            assert wait_task(b, t["id"], lambda _: True)["status"] == "queued"
        # Kept in Redis, expiring near the task's deadline, not in A's DATA_DIR.
        assert raw.hgetall(f"ig:in:{edit['id']}") == {b"0": png}
        assert 0 < raw.ttl(f"ig:in:{edit['id']}") <= DEADLINE_S + 600
        assert not any((a.data_dir / "task_inputs").glob("**/*"))

        # A task that ends before it is sent takes its images with it.
        r = httpx.delete(f"{b.base_url}/images/tasks/{dropped['id']}", timeout=15)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        wait_until(lambda: not raw.exists(f"ig:in:{dropped['id']}"), 10, what="the cancelled task's images gone")

        wait_until(lambda: leases(a) == 2, 10, what="A holding the first task and the edit")
        assert state.submits == 1
        a.kill()
        # B takes both over: polls the first again, submits the edit (reading its image from Redis).
        wait_until(lambda: state.submits == 2, LEASE_S + 10, what="B submitting the edit")
        release(state)
        for task_id in (first["id"], edit["id"]):
            t = wait_task(b, task_id, done, timeout=30)
            assert t["status"] == "succeeded" and t["result"]["data"], t
        (tid,) = [t.id for t in state.tasks.values() if t.prompt == "in this style --v 7"]
        (ref,) = state.base64_arrays[tid]
        assert base64.b64decode(ref.split(",", 1)[1]) == png  # the image reached the upstream
        assert state.submits == 2 and not any(t.prompt.startswith("never sent") for t in state.tasks.values())
        assert not raw.keys("ig:in:*")  # gone once the upstream had it
        assert_no_key_anywhere(key, redis_server.url, [a, b])

        # Redis away: an async edit is refused with 503 state_unavailable, never a 500.
        raw.close()
        redis_server.stop()
        r = _edit(b, "no state", png)
        assert r.status_code == 503 and r.json()["error"]["code"] == "state_unavailable", r.text
        b.assert_secret_absent(key)
