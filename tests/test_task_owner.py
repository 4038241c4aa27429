"""A task belongs to the caller that created it: 404 for anyone else, the admin key may read it, a
restarted BYOK task resumes only with the key that started it, and idempotent answers are the caller's."""

from __future__ import annotations

import json
import stat
from typing import Any

import httpx
import pytest

from image_gateway.config import ConfigError, load_config
from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.mj_util import done, imagine_ids, mj_server, new_key, release, start_gateway, submit_async, wait_task
from tests.routing_util import post
from tests.upstreams.base import FakeServer, FakeState

GW_A = "gw-owner-a-0123456789abcdef"
GW_B = "gw-owner-b-0123456789abcdef"
ADMIN = "gw-owner-admin-0123456789abcdef"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upstream_keys(state: FakeState) -> set[str | None]:
    """The keys the gateway sent to the fake proxy's API (image downloads carry none)."""
    return {r.headers.get("mj-api-secret") for r in state.requests if "/submit/" in r.path or "/task/" in r.path}


def task_url(gw: GatewayProcess, task_id: str) -> str:
    return f"{gw.base_url}/images/tasks/{task_id}"


def assert_not_found(gw: GatewayProcess, task_id: str, headers: dict[str, str]) -> None:
    """GET, events and DELETE all answer as for a task that does not exist."""
    url = task_url(gw, task_id)
    for method, path in (("GET", url), ("GET", url + "/events"), ("DELETE", url)):
        r = httpx.request(method, path, headers=headers, timeout=10)
        gw.remember(r.text)
        assert r.status_code == 404, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "task_not_found"


def first_event(gw: GatewayProcess, task_id: str, headers: dict[str, str]) -> dict[str, Any]:
    with httpx.stream("GET", task_url(gw, task_id) + "/events", headers=headers, timeout=10) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: "):
                event: dict[str, Any] = json.loads(line[6:])
                return event
    raise AssertionError("no event")


def test_another_gateway_key_gets_404_and_the_admin_key_may_read(gateway: GatewayFactory) -> None:
    key = new_key()
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, key, env={"GATEWAY_API_KEYS": f"{GW_A},{GW_B}", "ADMIN_API_KEY": ADMIN})
        a, b, admin = bearer(GW_A), bearer(GW_B), bearer(ADMIN)
        task = submit_async(gw, {"model": "mj-v7", "prompt": "mine alone"}, headers=a)
        wait_task(gw, task["id"], lambda t: t["status"] == "in_progress", headers=a)

        assert_not_found(gw, task["id"], b)
        (tid,) = imagine_ids(state)
        assert state.status_of(tid) == "IN_PROGRESS"  # B's DELETE cancelled nothing
        unknown = httpx.get(task_url(gw, "imgtask_" + "0" * 24), headers=b)
        assert unknown.status_code == 404  # the same answer as for an id that does not exist

        r = httpx.get(task_url(gw, task["id"]), headers=admin)
        assert r.status_code == 200 and r.json()["id"] == task["id"] and r.json()["status"] == "in_progress"
        assert first_event(gw, task["id"], admin)["type"] == "image.task.progress"
        assert first_event(gw, task["id"], a)["task_id"] == task["id"]

        r = httpx.delete(task_url(gw, task["id"]), headers=a)
        assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
        assert state.status_of(tid) == "CANCEL"
        assert_not_found(gw, task["id"], b)  # finished, and still not B's

        secret_file = gw.data_dir / "task_owner.secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        owner_secret = secret_file.read_text().strip()
        assert len(owner_secret) >= 32 and owner_secret not in gw.logs()
        gw.assert_secret_absent(key, GW_A, GW_B, ADMIN)


def test_byok_task_belongs_to_its_provider_key_also_after_a_restart(gateway: GatewayFactory) -> None:
    x, y = new_key(), new_key()
    # The fake takes any key, like a relay where X and Y are both valid accounts: nothing upstream
    # would stop Y's key from polling X's task.
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, None, provider="concurrency: 1", env={"ADMIN_API_KEY": ADMIN})
        mine, theirs = {"X-Provider-Key": x}, bearer(y)  # (the bearer token is Y's provider key here)
        running = submit_async(gw, {"model": "mj-v7", "prompt": "x running"}, headers=mine)
        queued = submit_async(gw, {"model": "mj-v7", "prompt": "x queued"}, headers=mine)  # waits for the slot
        wait_task(gw, running["id"], lambda t: t["status"] == "in_progress", headers=mine)
        for task_id in (running["id"], queued["id"]):
            assert_not_found(gw, task_id, theirs)
            assert_not_found(gw, task_id, {})  # nor anonymous

        gw.kill()
        assert state.submits == 1
        gw.start()
        for task_id in (running["id"], queued["id"]):
            assert_not_found(gw, task_id, theirs)  # Y can neither resume nor cancel it
            seen = httpx.get(task_url(gw, task_id), headers=bearer(ADMIN)).json()
            gw.remember(json.dumps(seen))
            assert seen["requires_key"] is True and seen["status"] in ("queued", "in_progress"), seen
        polled = state.polled_ids
        assert state.submits == 1  # nothing ran on Y's key (or without one)
        release(state)

        for task_id in (running["id"], queued["id"]):  # X's key: the running one polls again, the queued one
            t = wait_task(gw, task_id, done, timeout=30, headers=mine)  # is submitted
            assert t["status"] == "succeeded" and t["result"]["data"], t
        assert state.submits == 2 and state.polled_ids > polled
        assert upstream_keys(state) == {x}
        gw.assert_secret_absent(x, y, ADMIN)


def test_a_restarted_byok_task_resumes_only_with_the_key_that_started_it(gateway: GatewayFactory) -> None:
    x, y = new_key(), new_key()
    owner_secret = "task-owner-secret-" + new_key()
    with mj_server(hang=True) as (srv, state):
        gw = start_gateway(gateway, srv, None, env={"GATEWAY_API_KEY": GW_A, "TASK_OWNER_SECRET": owner_secret})
        me = bearer(GW_A)
        task = submit_async(gw, {"model": "mj-v7", "prompt": "started with x"}, headers={**me, "X-Provider-Key": x})
        wait_task(gw, task["id"], lambda t: t["status"] == "in_progress", headers=me)
        gw.kill()
        gw.start()
        polled = state.polled_ids
        other = wait_task(gw, task["id"], lambda t: True, headers={**me, "X-Provider-Key": y})
        assert other["requires_key"] is True  # the owner, but another provider key: not resumed
        still = wait_task(gw, task["id"], lambda t: True, headers=me)
        assert still["requires_key"] is True and state.polled_ids == polled
        release(state)
        wait_task(gw, task["id"], lambda t: True, headers={**me, "X-Provider-Key": x})
        t = wait_task(gw, task["id"], done, headers=me)
        assert t["status"] == "succeeded" and state.submits == 1
        assert upstream_keys(state) == {x}
        assert not (gw.data_dir / "task_owner.secret").exists()  # the configured secret is used, not a file
        gw.assert_secret_absent(x, y, GW_A, owner_secret)


def test_idempotent_answers_belong_to_the_caller(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, *_ = fakes
    x, y = "sk-idem-owner-x-0123456789", "sk-idem-owner-y-0123456789"
    # No gateway keys and no configured key: each caller's provider key is who it is. Both send the
    # same bearer token (e.g. a shared relay token) and their own X-Provider-Key.
    gw = gateway(config_yaml=f"router: {{retries: 0}}\nproviders:\n  openai: {{base_url: \"{a.url}/v1\"}}\n")
    body = {"model": "gpt-image-1", "prompt": "idempotent otter"}
    relay = bearer("relay-token-shared-by-both")
    hx = {**relay, "X-Provider-Key": x, "Idempotency-Key": "same-key"}
    hy = {**relay, "X-Provider-Key": y, "Idempotency-Key": "same-key"}
    first = post(gw, body, hx)
    assert first.status_code == 200, first.text
    theirs = post(gw, body, hy)
    assert theirs.status_code == 200 and "idempotent-replayed" not in theirs.headers
    assert a.state.count("/images") == 2  # Y's request ran, on Y's key
    assert [r.headers["authorization"] for r in a.state.requests if "/images" in r.path] == [f"Bearer {x}",
                                                                                               f"Bearer {y}"]
    again = post(gw, body, hx)
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert a.state.count("/images") == 2

    # A task answered through an Idempotency-Key is its caller's too.
    async_body = {**body, "async": True}
    tx = post(gw, async_body, {**hx, "Idempotency-Key": "task-key"})
    ty = post(gw, async_body, {**hy, "Idempotency-Key": "task-key"})
    assert tx.status_code == ty.status_code == 202
    assert tx.json()["id"] != ty.json()["id"] and "idempotent-replayed" not in ty.headers
    assert_not_found(gw, tx.json()["id"], {**relay, "X-Provider-Key": y})
    assert httpx.get(task_url(gw, tx.json()["id"]), headers={**relay, "X-Provider-Key": x}).status_code == 200
    gw.assert_secret_absent(x, y)


def test_task_owner_secret_setting() -> None:
    secret = "owner-secret-0123456789abcdef"
    cfg = load_config({"TASK_OWNER_SECRET": secret}, None, None)
    assert cfg.task_owner_secret == secret and secret in cfg.secrets()  # scrubbed from every log line
    assert secret not in repr(cfg)
    assert load_config({}, None, None).task_owner_secret is None
    with pytest.raises(ConfigError, match="TASK_OWNER_SECRET"):
        load_config({"TASK_OWNER_SECRET": "short"}, None, None)
