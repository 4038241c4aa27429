"""Hot reload: file edits, SIGHUP and POST /admin/reload swap the config; invalid files change nothing."""

from __future__ import annotations

import concurrent.futures
import signal

import httpx

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.routing_util import ADMIN_KEY, UPSTREAM_KEY, log_events, post, write_config
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def route_to(url: str, label: str) -> str:
    return f"""
router: {{retries: 0}}
routes:
  - name: img
    provider: openai
    upstream_model: gpt-image-1
    deployments: [{{name: {label}, base_url: "{url}/v1"}}]
"""


def _served_by(gw: GatewayProcess) -> str:
    r = post(gw, {"model": "img", "prompt": "x"})
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-deployment"]


def test_file_edit_takes_effect_while_a_slow_request_finishes_on_the_old_route(
        gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY}, config_yaml=route_to(a.url, "a"))
    assert _served_by(gw) == "a"
    a.state.fail_next(fake_openai.slow(2.5))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(post, gw, {"model": "img", "prompt": "slow one"})
        wait_until(lambda: a.state.count("/images") == 2, what="the slow request to reach A")
        write_config(gw.workdir / "gateway.yaml", route_to(b.url, "b"))
        wait_until(lambda: bool(log_events(gw, "config reloaded")), timeout=5, what="the file reload")
        assert _served_by(gw) == "b"  # new requests: the new route
        assert not slow.done()
        r = slow.result(timeout=10)
    assert r.status_code == 200, r.text  # the old route's upstream session was not closed under it
    assert r.headers["x-gateway-deployment"] == "a"
    assert a.state.count("/images") == 2 and b.state.count("/images") == 1
    info = httpx.get(gw.url + "/admin/deployments", headers=ADMIN).json()
    assert info["generation"] == 1 and info["routes"]["img"][0]["base_url"] == b.url + "/v1"
    gw.assert_secret_absent(UPSTREAM_KEY, ADMIN_KEY)


def test_an_invalid_edit_changes_nothing_and_the_error_is_logged_and_returned(
        gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, b, _ = fakes
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY}, config_yaml=route_to(a.url, "a"))
    bad = route_to(b.url, "b") + "aliases: {x: nowhere}\n"
    write_config(gw.workdir / "gateway.yaml", bad)
    wait_until(lambda: bool(log_events(gw, "config reload rejected; keeping the running config")), timeout=5,
               what="the rejected reload")
    rejected = log_events(gw, "config reload rejected; keeping the running config")[0]
    assert rejected["trigger"] == "file" and "nowhere" in rejected["error"]
    assert _served_by(gw) == "a"
    r = httpx.post(gw.url + "/admin/reload", headers=ADMIN)
    gw.remember(r.text)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    assert "nowhere" in r.json()["error"]["message"]
    write_config(gw.workdir / "gateway.yaml", "providers:\n  openai: {api_key: sk-literal-in-file-123456}\n")
    r = httpx.post(gw.url + "/admin/reload", headers=ADMIN)
    assert r.status_code == 400 and "sk-literal-in-file-123456" not in r.text
    assert _served_by(gw) == "a" and b.state.count("/images") == 0
    assert httpx.get(gw.url + "/admin/deployments", headers=ADMIN).json()["generation"] == 0
    gw.assert_secret_absent(UPSTREAM_KEY, ADMIN_KEY)


def test_sighup_and_admin_reload_swap_routes_and_keys(gateway: GatewayFactory, fakes: list[FakeServer]) -> None:
    a, b, c = fakes
    key1, key2 = "gw-reload-key-one-0123456789", "gw-reload-key-two-0123456789"
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "ADMIN_API_KEY": ADMIN_KEY, "CONFIG_WATCH": "0"},
                 config_yaml=route_to(a.url, "a"), start=False)
    (gw.workdir / ".env").write_text(f"GATEWAY_API_KEY={key1}\n")
    gw.start()

    def gen(key: str) -> httpx.Response:
        r = post(gw, {"model": "img", "prompt": "x"}, {"Authorization": f"Bearer {key}"})
        return r

    assert gen(key1).headers["x-gateway-deployment"] == "a"
    write_config(gw.workdir / "gateway.yaml", route_to(b.url, "b"))
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: bool(log_events(gw, "config reloaded")), timeout=5, what="the SIGHUP reload")
    assert gen(key1).headers["x-gateway-deployment"] == "b"

    # .env is re-read too: the gateway key is swapped with the routes.
    (gw.workdir / ".env").write_text(f"GATEWAY_API_KEY={key2}\n")
    write_config(gw.workdir / "gateway.yaml", route_to(c.url, "c"))
    assert httpx.post(gw.url + "/admin/reload").status_code == 401
    assert httpx.post(gw.url + "/admin/reload", headers={"Authorization": "Bearer nope"}).status_code == 401
    r = httpx.post(gw.url + "/admin/reload", headers=ADMIN)
    assert r.status_code == 200 and r.json()["generation"] == 2, r.text
    assert gen(key1).status_code == 401
    assert gen(key2).headers["x-gateway-deployment"] == "c"
    (gw.workdir / ".env").unlink()  # the test's own file; everything else must be free of keys
    gw.assert_secret_absent(UPSTREAM_KEY, ADMIN_KEY, key1, key2)


def test_admin_api_is_off_without_an_admin_key(gateway: GatewayFactory) -> None:
    gw = gateway()
    r = httpx.post(gw.url + "/admin/reload", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "admin_disabled"
