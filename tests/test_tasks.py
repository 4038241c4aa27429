"""Async tasks end to end: respond-async, polling, events, webhooks, cancel, restart-resume, batching."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from typing import Any

import httpx

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.mj_util import (
    client,
    done,
    image_of,
    imagine_ids,
    mj_server,
    new_key,
    solid,
    start_gateway,
    submit_async,
    wait_task,
)
from tests.upstreams import fake_mj
from tests.upstreams.base import FakeServer, Fault
from tests.waits import holds_for, wait_until


def task_rows(gw: GatewayProcess) -> list[tuple[Any, ...]]:
    with sqlite3.connect(gw.data_dir / "tasks.sqlite3") as db:
        return db.execute("SELECT id, status, key_source FROM tasks").fetchall()


def test_async_task_with_the_sdk_then_polled_to_its_result(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server() as (srv, state):
        gw = start_gateway(gateway, srv, key)
        c = client(gw)
        raw = c.images.with_raw_response.generate(model="mj-v7", prompt="a lighthouse", n=2,
                                                  extra_headers={"Prefer": "respond-async"})
        assert raw.status_code == 202
        task = raw.http_response.json()
        assert task["object"] == "image.task" and task["status"] == "queued" and task["model"] == "mj-v7"
        assert raw.headers["location"] == f"/v1/images/tasks/{task['id']}"
        seen: list[tuple[str, int]] = []

        def finished() -> Any:  # every answer on the way is recorded
            t: Any = c.get(f"/images/tasks/{task['id']}", cast_to=object)
            gw.remember(json.dumps(t))
            if not seen or seen[-1] != (t["status"], t["progress"]):
                seen.append((t["status"], t["progress"]))
            return t if done(t) else None

        t = wait_until(finished, timeout=15, interval=0.03, what="the task to finish")
        assert t["status"] == "succeeded" and t["error"] is None, t
        assert any(s == "in_progress" and p in (10, 37, 68) for s, p in seen), seen
        assert [p for _, p in seen] == sorted(p for _, p in seen)  # progress never goes back
        (tid,) = imagine_ids(state)
        colors = [solid(image_of(d["b64_json"])) for d in t["result"]["data"]]
        assert colors == fake_mj.quadrant_colors(tid)[:2]
        assert [r[1:] for r in task_rows(gw)] == [("succeeded", "configured")]
        gw.assert_secret_absent(key)


def test_body_async_flag_and_a_sync_provider(gateway: GatewayFactory) -> None:
    gw = gateway()
    no_prefer = {"Prefer": ""}  # the body flag alone asks for a task
    task = submit_async(gw, {"model": "demo", "prompt": "a boat", "size": "64x64", "async": True}, no_prefer)
    t = wait_task(gw, task["id"], done)
    assert t["status"] == "succeeded" and len(t["result"]["data"]) == 1
    # The hot path: a plain synchronous request stores nothing.
    r = httpx.post(gw.base_url + "/images/generations", json={"model": "demo", "prompt": "x", "size": "64x64"})
    assert r.status_code == 200 and "x-gateway-task-id" not in r.headers
    assert [row[0] for row in task_rows(gw)] == [task["id"]]
    assert httpx.get(f"{gw.base_url}/images/tasks/imgtask_nope").status_code == 404


def test_events_stream_progress_then_the_finished_task(gateway: GatewayFactory) -> None:
    with mj_server(step_s=0.2, progress_steps=[10, 25, 40, 55, 70, 85]) as (srv, _):
        gw = start_gateway(gateway, srv, new_key())
        task = submit_async(gw, {"model": "mj-v7", "prompt": "aurora"})
        events: list[dict[str, Any]] = []
        with httpx.stream("GET", f"{gw.base_url}/images/tasks/{task['id']}/events", timeout=20) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data: "):
                    if line == "data: [DONE]":
                        break
                    events.append(json.loads(line[6:]))
        progress = [e["progress"] for e in events if e["type"] == "image.task.progress"]
        assert progress[0] == 0 and progress == sorted(progress), events
        assert len({10, 25, 40, 55, 70, 85} & set(progress)) >= 2, events
        assert events[-1]["type"] == "image.task.succeeded"
        assert events[-1]["task"]["result"]["data"]


def test_webhook_is_signed_and_retried(gateway: GatewayFactory, hook: FakeServer) -> None:
    secret = "whsec-" + new_key()
    with mj_server() as (srv, _):
        # The receiver is on 127.0.0.1: the operator allows it (caller URLs reach public hosts only).
        gw = start_gateway(gateway, srv, new_key(), env={"WEBHOOK_SECRET": secret, "WEBHOOK_BACKOFF_S": "0.1",
                                                         "PRIVATE_URL_ALLOWLIST": "127.0.0.1"})
        hook.state.fail_next(Fault(status=503, match="/hook"))
        task = submit_async(gw, {"model": "mj-v7", "prompt": "sunrise", "webhook_url": f"{hook.url}/hook"})
        wait_until(lambda: len(hook.state.requests) >= 2, timeout=15, what="the webhook and its retry")
        first, second = hook.state.requests[:2]
        assert first.raw == second.raw  # the same delivery, retried after the 503
        body = second.json
        assert body["id"] == task["id"] and body["status"] == "succeeded" and body["result"]["data"]
        expected = "sha256=" + hmac.new(secret.encode(), second.raw, hashlib.sha256).hexdigest()
        assert second.headers["x-gateway-signature"] == expected
        assert second.headers["x-gateway-event"] == "image.task.succeeded"
        # Delivered: no third delivery follows (watched over several back-offs).
        holds_for(lambda: len(hook.state.requests) == 2, 0.5, what="no third delivery")
        gw.assert_secret_absent(secret)


def test_cancel_stops_the_upstream_task(gateway: GatewayFactory) -> None:
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        task = submit_async(gw, {"model": "mj-v7", "prompt": "forever"})
        wait_task(gw, task["id"], lambda t: t["status"] == "in_progress")
        r = httpx.delete(f"{gw.base_url}/images/tasks/{task['id']}")
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        (tid,) = imagine_ids(state)
        assert state.status_of(tid) == "CANCEL"
        assert wait_task(gw, task["id"], done)["status"] == "cancelled"
        assert httpx.delete(f"{gw.base_url}/images/tasks/{task['id']}").json()["status"] == "cancelled"
        finished = submit_async(gw, {"model": "demo", "prompt": "quick", "size": "32x32"})
        wait_task(gw, finished["id"], done)
        r = httpx.delete(f"{gw.base_url}/images/tasks/{finished['id']}")
        assert r.status_code == 409 and r.json()["error"]["code"] == "task_not_cancellable"


def test_a_caller_that_disconnects_does_not_lose_its_job(gateway: GatewayFactory) -> None:
    with mj_server(step_s=0.2) as (srv, state):
        gw = start_gateway(gateway, srv, new_key())
        task_id = None
        with httpx.stream("POST", f"{gw.base_url}/images/generations", timeout=20,
                          json={"model": "mj-v7", "prompt": "a kite", "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith(": task "):
                    task_id = line.split()[-1]
                    break  # ...and hang up
        assert task_id is not None
        t = wait_task(gw, task_id, done)
        assert t["status"] == "succeeded"
        (tid,) = imagine_ids(state)
        assert solid(image_of(t["result"]["data"][0]["b64_json"])) == fake_mj.quadrant_colors(tid)[0]


def test_restart_resumes_a_task_that_used_the_configured_key(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(step_s=0.4, secret=key) as (srv, state):
        gw = start_gateway(gateway, srv, key)
        task = submit_async(gw, {"model": "mj-v7", "prompt": "slow river"})
        wait_task(gw, task["id"], lambda t: t["status"] == "in_progress")
        gw.kill()
        polled = state.polled_ids
        gw.start()
        t = wait_task(gw, task["id"], done)
        assert t["status"] == "succeeded", t
        assert state.polled_ids > polled and state.submits == 1  # polled again, not resubmitted
        (tid,) = imagine_ids(state)
        assert solid(image_of(t["result"]["data"][0]["b64_json"])) == fake_mj.quadrant_colors(tid)[0]
        gw.assert_secret_absent(key)


def test_restart_asks_for_a_callers_own_key_again(gateway: GatewayFactory) -> None:
    key, gw_key = new_key(), "gw-" + new_key()
    with mj_server(step_s=0.4, secret=key) as (srv, state):
        # No configured key: callers bring theirs. (With gateway keys, a task belongs to the gateway key,
        # so its owner can look at it without the provider key; without them, the provider key is the owner.)
        gw = start_gateway(gateway, srv, None, env={"GATEWAY_API_KEY": gw_key})
        me = {"Authorization": f"Bearer {gw_key}"}
        mine = {**me, "X-Provider-Key": key}
        task = submit_async(gw, {"model": "mj-v7", "prompt": "my own key"}, headers=mine)
        wait_task(gw, task["id"], lambda t: t["status"] == "in_progress", headers=me)
        assert [r[2] for r in task_rows(gw)] == ["request"]
        gw.kill()
        gw.start()
        blocked = wait_task(gw, task["id"], lambda t: True, headers=me)
        assert blocked["status"] == "in_progress" and blocked["requires_key"] is True
        assert blocked["error"]["code"] == "provider_key_required"
        polled = state.polled_ids  # nothing to poll with (watched over several poll intervals):
        holds_for(lambda: state.polled_ids == polled, 0.5, what="no poll without the key")
        wait_task(gw, task["id"], lambda t: True, headers=mine)  # the key again: it resumes
        t = wait_task(gw, task["id"], done, headers=me)  # (and runs on without it being sent again)
        assert t["status"] == "succeeded" and state.submits == 1
        gw.assert_secret_absent(key, gw_key)


def test_polling_is_batched(gateway: GatewayFactory) -> None:
    jobs = 30
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, new_key(), provider="poll_interval_s: 0.2, concurrency: 64")
        ids = [submit_async(gw, {"model": "mj-v7", "prompt": f"job {i}"})["id"] for i in range(jobs)]
        for tid in ids:
            wait_task(gw, tid, lambda t: t["status"] == "in_progress")
        polls0, polled0 = state.polls, state.polled_ids
        wait_until(lambda: state.polls - polls0 >= 5, timeout=10, what="five polls")
        polls, polled = state.polls - polls0, state.polled_ids - polled0
        # One list-by-condition per interval asking about every job in flight, not one call per job.
        assert polled >= jobs * (polls - 1), (polls, polled)
        batches = [r.json["ids"] for r in state.requests[-3:] if r.path.endswith("/list-by-condition")]
        assert batches and all(len(b) == jobs for b in batches)


def test_a_failed_upstream_task_falls_back_and_the_task_records_the_answer(gateway: GatewayFactory) -> None:
    with mj_server(fail_prompts=["doomed"]) as (srv, state):
        routes = "  - {name: mj-v7, retries: 0, fallbacks: [demo]}\n"
        gw = start_gateway(gateway, srv, new_key(), routes=routes)
        body = {"model": "mj-v7", "prompt": "doomed", "size": "64x64"}
        r = httpx.post(f"{gw.base_url}/images/generations", json=body, timeout=20)
        assert r.status_code == 200 and r.headers["x-gateway-provider"] == "demo", r.text
        assert state.submits == 1  # the upstream said FAILED: nothing was made, so falling back is free
        t = wait_task(gw, r.headers["x-gateway-task-id"], done)
        assert t["status"] == "succeeded" and t["result"]["data"] == r.json()["data"]
