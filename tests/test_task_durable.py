"""An accepted task is durable from its 202 on: kill -9 and a restart submit what was never sent (once),
resume what was, and never resend a submission whose outcome is unknown."""

from __future__ import annotations

import base64
import io

import httpx
from PIL import Image

from tests.conftest import GatewayFactory
from tests.mj_util import (
    done,
    imagine_ids,
    mj_server,
    new_key,
    release,
    start_gateway,
    submit_async,
    submitted_prompts,
    wait_task,
)
from tests.upstreams.base import Fault
from tests.waits import wait_until


def test_kill_9_with_tasks_queued_behind_the_account_limit_loses_none(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(hang=True, secret=key) as (srv, state):
        # The default account limit (3 at a time); a queue long enough that all 17 others wait in it.
        gw = start_gateway(gateway, srv, key, provider="concurrency: 3, queue_size: 20")
        ids = [submit_async(gw, {"model": "mj-v7", "prompt": f"queued {i}"})["id"] for i in range(20)]
        wait_until(lambda: state.submits == 3, what="three running upstream")
        queued = [t for t in ids if wait_task(gw, t, lambda _: True)["status"] == "queued"]
        assert len(queued) >= 17
        gw.kill()
        assert state.submits == 3
        release(state)
        gw.start()
        for task_id in ids:
            t = wait_task(gw, task_id, done, timeout=60)
            assert t["status"] == "succeeded" and t["result"]["data"], t
        assert state.submits == 20 and len(imagine_ids(state)) == 20
        assert sorted(submitted_prompts(state)) == sorted(f"queued {i} --v 7" for i in range(20))  # each once
        assert not any((gw.data_dir / "task_inputs").glob("*/*"))
        gw.assert_secret_absent(key)


def test_a_queued_edit_keeps_its_input_image_across_a_crash(gateway: GatewayFactory) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (9, 8, 7)).save(buf, "PNG")
    png = buf.getvalue()
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, new_key(), provider="concurrency: 1")
        first = submit_async(gw, {"model": "mj-v7", "prompt": "holds the slot"})
        r = httpx.post(f"{gw.base_url}/images/edits", headers={"Prefer": "respond-async"}, timeout=10,
                       data={"model": "mj-v7", "prompt": "in this style"},
                       files={"image": ("ref.png", png, "image/png")})
        assert r.status_code == 202, r.text
        edit = r.json()
        wait_until(lambda: state.submits == 1, what="the first task upstream")
        stored = list((gw.data_dir / "task_inputs").glob("*/*"))
        assert [p.read_bytes() for p in stored] == [png] and (stored[0].stat().st_mode & 0o777) == 0o600
        gw.kill()
        release(state)
        gw.start()
        for task_id in (first["id"], edit["id"]):
            assert wait_task(gw, task_id, done, timeout=30)["status"] == "succeeded"
        (tid,) = [t.id for t in state.tasks.values() if t.prompt == "in this style --v 7"]
        (ref,) = state.base64_arrays[tid]
        assert base64.b64decode(ref.split(",", 1)[1]) == png
        assert state.submits == 2
        assert not any((gw.data_dir / "task_inputs").glob("*/*"))  # gone once the upstream had it


def test_a_crash_during_the_submit_is_not_sent_again(gateway: GatewayFactory) -> None:
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        state.fail_next(Fault(delay_s=60, passthrough=True, match="/submit/imagine"))  # the answer never comes
        task = submit_async(gw, {"model": "mj-v7", "prompt": "maybe billed"})
        wait_until(lambda: state.count("/submit/imagine") == 1, what="the submit to reach the upstream")
        gw.kill()
        gw.start()
        t = wait_task(gw, task["id"], done)
        assert t["status"] == "failed" and t["error"]["code"] == "submit_outcome_unknown", t
        assert state.count("/submit/imagine") == 1  # the upstream may have it: not sent twice
