"""Caller URLs (webhook_url, images[].image_url, mask, chat image_url parts) reach public addresses only.

In-process (httpx.ASGITransport) for the API boundary; real servers on 127.0.0.1 for what the gateway
would have reached. The policy's own cases (spellings, allowlist, redirects, connect-time DNS) run
against media/egress.py and media/fetch.py directly, on real sockets.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from image_gateway.config import ConfigError, load_config
from image_gateway.engine.webhooks import WebhookSender
from image_gateway.errors import InvalidRequest, UpstreamError
from image_gateway.media.egress import (
    STRICT,
    EgressPolicy,
    EgressRefused,
    GuardedResolver,
    parse_allowlist,
)
from image_gateway.media.fetch import fetch_caller_image, fetch_image
from tests.conftest import GatewayFactory
from tests.inprocess import InProcessGateway
from tests.mj_util import imagine_ids, mj_server, new_key, start_gateway
from tests.upstreams.base import FakeServer, FakeState, recording_middleware
from tests.waits import wait_until

# Every spelling the issue names, and their relatives: loopback, private, link-local, CGNAT, multicast,
# reserved, unspecified, IPv4-mapped / 6to4 / NAT64 forms, legacy IPv4 spellings.
INTERNAL = [
    "http://127.0.0.1/x", "http://localhost/x", "http://LOCALHOST./x", "http://2130706433/x", "http://127.1/x",
    "http://0x7f.1/x", "http://0x7f000001/x", "http://017700000001/x", "http://[::1]/x",
    "http://[::ffff:127.0.0.1]/x", "http://[2002:7f00:1::]/x", "http://[64:ff9b::7f00:1]/x",
    "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/x", "http://172.16.0.1/x",
    "http://192.168.0.1/x", "http://100.64.0.1/x", "http://[fd00::1]/x", "http://[fe80::1%25eth0]/x",
    "http://0.0.0.0/x", "http://[::]/x", "http://224.0.0.1/x", "http://240.0.0.1/x", "https://127.0.0.1:8443/x",
    "http://[::ffff:a9fe:a9fe]/x", "http://[fec0::1]/x",  # 169.254.169.254 IPv4-mapped; IPv6 site-local
]
PNG = base64.b64decode(  # a real 1x1 PNG (an upstream that decodes it, as Stability's does, takes it)
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


@pytest.fixture
def receiver() -> Iterator[FakeServer]:
    """Records every request. /hook answers ok; /img.png is an image; /to/<path> redirects to
    http://<Host header>/<path> unless ?abs= names an absolute target; /loop redirects to itself."""
    state = FakeState()
    app = web.Application(middlewares=[recording_middleware(state)])

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def img(request: web.Request) -> web.Response:
        return web.Response(body=PNG, content_type="image/png")

    async def to(request: web.Request) -> web.Response:
        target = request.query.get("abs") or f"http://{request.host}/{request.match_info['rest']}"
        raise web.HTTPFound(target)

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    app.router.add_post("/hook", ok)
    app.router.add_get("/img.png", img)
    app.router.add_get("/to/{rest:.*}", to)
    app.router.add_get("/loop", loop)
    srv = FakeServer(app, state).start()
    yield srv
    srv.stop()


def localhost_url(srv: FakeServer, path: str) -> str:
    return f"http://localhost:{srv.port}{path}"


def localhost_is_only_loopback() -> bool:
    return all(i[4][0] in ("127.0.0.1", "::1") for i in socket.getaddrinfo("localhost", None))


def in_process(tmp_path: Path, **env: str) -> InProcessGateway:
    """The app in-process (`with in_process(...) as gw:`), the demo route and these settings."""
    return InProcessGateway(tmp_path, env)


def post(gw: InProcessGateway, path: str, body: dict[str, Any]) -> httpx.Response:
    return gw.http.post(path, json=body)


def refused(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert (err["type"], err["param"], err["code"]) == ("invalid_request_error", param, "url_not_allowed"), err
    assert "PRIVATE_URL_ALLOWLIST" in err["message"]


# -- the API boundary ---------------------------------------------------------------------------


def test_webhook_url_to_an_internal_host_is_a_400_and_nothing_is_sent(tmp_path: Path,
                                                                            receiver: FakeServer) -> None:
    with in_process(tmp_path) as gw:
        for url in [f"{receiver.url}/hook", localhost_url(receiver, "/hook"), *INTERNAL]:
            r = post(gw, "/v1/images/generations",
                     {"model": "demo", "prompt": "x", "async": True, "webhook_url": url})
            refused(r, "webhook_url")
        r = post(gw, "/v1/images/generations", {"model": "demo", "prompt": "x", "webhook_url": "ftp://e.com/"})
        refused(r, "webhook_url")
    assert receiver.state.requests == []


@pytest.mark.parametrize("url", INTERNAL)
def test_edit_image_url_and_mask_to_an_internal_host_are_400s(tmp_path: Path, url: str) -> None:
    with in_process(tmp_path) as gw:
        refused(post(gw, "/v1/images/edits", {"model": "demo", "prompt": "x", "images": [{"image_url": url}]}),
                "images")
        refused(post(gw, "/v1/images/edits", {"model": "demo", "prompt": "x", "images": [url]}), "images")
        data = "data:image/png;base64,iVBORw0KGgo="
        refused(post(gw, "/v1/images/edits", {"model": "demo", "prompt": "x", "images": [{"image_url": data}],
                                              "mask": {"image_url": url}}), "mask")


def test_chat_image_url_parts_to_an_internal_host_are_400s(tmp_path: Path) -> None:
    with in_process(tmp_path) as gw:
        for url in INTERNAL:
            parts = [{"type": "text", "text": "like this"}, {"type": "image_url", "image_url": {"url": url}}]
            r = post(gw, "/v1/chat/completions",
                     {"model": "demo", "messages": [{"role": "user", "content": parts}]})
            refused(r, "messages")


def test_allowlisted_webhook_receiver_is_delivered_to(tmp_path: Path, receiver: FakeServer) -> None:
    with in_process(tmp_path, PRIVATE_URL_ALLOWLIST="127.0.0.1, localhost, 10.0.0.0/8",
                    WEBHOOK_BACKOFF_S="0.05") as gw:
        for url in (f"{receiver.url}/hook", localhost_url(receiver, "/hook")):
            r = post(gw, "/v1/images/generations",
                     {"model": "demo", "prompt": "x", "async": True, "webhook_url": url})
            assert r.status_code == 202, r.text
        wait_until(lambda: len(receiver.state.requests) >= 2, timeout=10, what="both webhook deliveries")
        assert [q.path for q in receiver.state.requests] == ["/hook", "/hook"]
        assert {q.json["status"] for q in receiver.state.requests} == {"succeeded"}
        # The allowlist opens what it names, nothing else.
        r = post(gw, "/v1/images/generations",
                 {"model": "demo", "prompt": "x", "async": True, "webhook_url": "http://192.168.0.1/hook"})
        refused(r, "webhook_url")


def test_allowlisted_image_host_is_accepted(tmp_path: Path) -> None:
    with in_process(tmp_path, PRIVATE_URL_ALLOWLIST="127.0.0.1") as gw:
        r = post(gw, "/v1/images/edits",
                 {"model": "demo", "prompt": "x", "images": [{"image_url": "http://127.0.0.1:9/a.png"}]})
        assert r.status_code == 200, r.text  # demo does not fetch it; the point is the boundary let it by
        refused(post(gw, "/v1/images/edits",
                     {"model": "demo", "prompt": "x", "images": ["http://127.0.0.2/a.png"]}), "images")


# -- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("url", INTERNAL)
async def test_policy_refuses_every_spelling(url: str) -> None:
    with pytest.raises(EgressRefused):
        await STRICT.check(url)


@pytest.mark.parametrize("url", ["http://8.8.8.8/x", "https://[2606:4700::1]/x", "http://0x08080808/x",
                                 "http://[2002:808:808::1]/x", "http://[::ffff:8.8.8.8]/x",
                                 "http://no-such-host.invalid/x"])
async def test_policy_lets_public_addresses_through(url: str) -> None:
    # (an unresolvable name passes the boundary: nothing to reach; a fetch of ours checks it again)
    await STRICT.check(url)


async def test_allowlist_takes_ips_cidrs_and_host_names() -> None:
    p = EgressPolicy.parse(parse_allowlist("127.0.0.1, 10.0.0.0/8 ,fd00::/8,[::1],Images.Internal."))
    for url in ("http://127.0.0.1/", "http://2130706433/", "http://10.9.8.7/", "http://[fd00::5]/", "http://[::1]/",
                "http://images.internal/", "http://[::ffff:10.1.1.1]/"):
        await p.check(url)
    for url in ("http://127.0.0.2/", "http://192.168.0.1/", "http://169.254.169.254/", "http://[fe80::1]/"):
        with pytest.raises(EgressRefused):
            await p.check(url)
    assert load_config({}, env_file=None).private_url_allowlist == ()
    assert load_config({"PRIVATE_URL_ALLOWLIST": "10.0.0.0/8,a.b"}, env_file=None).private_url_allowlist == (
        "10.0.0.0/8", "a.b")
    with pytest.raises(ConfigError, match="PRIVATE_URL_ALLOWLIST"):
        load_config({"PRIVATE_URL_ALLOWLIST": "10.0.0.0/8,not a host"}, env_file=None)


# -- connect time: redirects, DNS answers, webhooks ------------------------------------------------

LOCAL_NAME = EgressPolicy.parse(["localhost"])  # the name is allowed; 127.0.0.1 as such is not


async def test_a_redirect_to_loopback_is_refused_hop_by_hop(receiver: FakeServer) -> None:
    if not localhost_is_only_loopback():
        pytest.skip("localhost does not resolve to loopback here")
    # Allowed name → its own name: followed.
    data = await fetch_caller_image(localhost_url(receiver, "/to/img.png"), "images", LOCAL_NAME, 1 << 20, 10)
    assert data == PNG
    # Allowed name → 127.0.0.1 (and the classic metadata address): refused before the hop is made.
    receiver.state.requests.clear()
    for target in (f"{receiver.url}/img.png", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
                   f"http://2130706433:{receiver.port}/img.png", "file:///etc/passwd"):
        with pytest.raises(InvalidRequest) as ei:
            await fetch_caller_image(localhost_url(receiver, f"/to/x?abs={target}"), "images", LOCAL_NAME, 1 << 20, 10)
        assert ei.value.param == "images" and ei.value.status == 400
    assert [q.path for q in receiver.state.requests] == ["/to/x"] * 5  # never /img.png
    # At most 3 redirects.
    receiver.state.requests.clear()
    with pytest.raises(UpstreamError, match="more than 3"):
        await fetch_caller_image(localhost_url(receiver, "/loop"), "images", LOCAL_NAME, 1 << 20, 10)
    assert receiver.state.count("/loop") == 4
    # Size cap as before.
    with pytest.raises(UpstreamError, match="larger than"):
        await fetch_caller_image(localhost_url(receiver, "/img.png"), "images", LOCAL_NAME, 8, 10)


class FakeDNS(AbstractResolver):
    """A DNS server's answers, one list per lookup (a rebinding name answers differently each time)."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        return [{"hostname": host, "host": a, "port": port, "family": socket.AF_INET, "proto": 0, "flags": 0}
                for a in self.answers.pop(0)]

    async def close(self) -> None:
        pass


async def test_connect_time_resolution_is_checked_and_pinned(receiver: FakeServer) -> None:
    resolver = GuardedResolver(lambda: STRICT, inner=FakeDNS(["93.184.216.34"], ["127.0.0.1"], ["8.8.8.8", "10.0.0.1"]))
    # What the connector gets is exactly the answer that was checked.
    assert [r["host"] for r in await resolver.resolve("images.example", 80)] == ["93.184.216.34"]
    with pytest.raises(EgressRefused):  # the name now points at loopback
        await resolver.resolve("images.example", 80)
    with pytest.raises(EgressRefused):  # any internal address among the answers refuses the name
        await resolver.resolve("images.example", 80)
    # Through a real session: a name that rebinds to our loopback server is never connected to.
    dns = FakeDNS(["127.0.0.1"])
    connector = aiohttp.TCPConnector(resolver=GuardedResolver(lambda: STRICT, inner=dns), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector) as s:
        with pytest.raises(EgressRefused):
            await fetch_image(s, f"http://images.example:{receiver.port}/img.png", 1 << 20, 10, STRICT)
    assert receiver.state.requests == []


async def test_webhook_sender_refuses_at_connect_time_without_retrying(receiver: FakeServer) -> None:
    sender = WebhookSender(attempts=3, backoff_s=5.0)  # no policy given: no allowlist
    try:
        t0 = time.monotonic()
        for url in (f"{receiver.url}/hook", localhost_url(receiver, "/hook"), f"http://0x7f.1:{receiver.port}/hook"):
            assert await sender.deliver(url, b"{}", "task_1", "image.task.succeeded") is False
        assert time.monotonic() - t0 < 5.0  # refused once each, not retried after a back-off
        assert receiver.state.requests == []
    finally:
        await sender.close()
    allowed = WebhookSender(attempts=1, policy=lambda: LOCAL_NAME)
    try:
        assert await allowed.deliver(localhost_url(receiver, "/hook"), b"{}", "task_1", "image.task.succeeded")
        assert not await allowed.deliver(f"{receiver.url}/hook", b"{}", "task_1", "image.task.succeeded")
    finally:
        await allowed.close()
    assert [q.path for q in receiver.state.requests] == ["/hook"]


def test_midjourney_reference_url_that_redirects_to_loopback_is_refused(gateway: GatewayFactory,
                                                                       receiver: FakeServer) -> None:
    """The gateway fetches Midjourney reference images itself: every redirect hop is checked."""
    if not localhost_is_only_loopback():
        pytest.skip("localhost does not resolve to loopback here")
    key = new_key()
    with mj_server() as (srv, state):
        # The upstream (MJ_BASE_URL on 127.0.0.1) is the operator's: not subject to the allowlist.
        gw = start_gateway(gateway, srv, key, env={"PRIVATE_URL_ALLOWLIST": "localhost"})
        ok = httpx.post(gw.base_url + "/images/edits", timeout=30, json={
            "model": "mj-v7", "prompt": "in this style",
            "images": [{"image_url": localhost_url(receiver, "/to/img.png")}]})
        assert ok.status_code == 200, ok.text
        (tid,) = imagine_ids(state)
        (ref,) = state.base64_arrays[tid]
        assert base64.b64decode(ref.split(",", 1)[1]) == PNG
        bad = httpx.post(gw.base_url + "/images/edits", timeout=30, json={
            "model": "mj-v7", "prompt": "in this style",
            "images": [{"image_url": localhost_url(receiver, f"/to/x?abs={receiver.url}/img.png")}]})
        refused(bad, "images")
        assert len(imagine_ids(state)) == 1  # nothing more was submitted
        # the redirect to 127.0.0.1 was never followed
        assert [q.path for q in receiver.state.requests] == ["/to/img.png", "/img.png", "/to/x"]
        gw.remember(ok.text, bad.text)
        gw.assert_secret_absent(key)


def test_stability_edit_image_url_is_fetched_under_the_allowlist_and_redirects_rechecked(
        inprocess_gateway: Any, receiver: FakeServer) -> None:
    """Adapters that download a caller's image themselves (Stability, OpenAI multipart edits) fetch it
    under the policy that admitted the request: an allowlisted host works, a redirect from it to an
    address the policy refuses is not followed."""
    from tests.upstreams import fake_stability

    if not localhost_is_only_loopback():
        pytest.skip("localhost does not resolve to loopback here")
    key = "sk-stab-egress-0123456789abcdef"
    up = fake_stability.start(fake_stability.StabilityState(api_key=key))
    try:
        gw = inprocess_gateway({"STABILITY_API_KEY": key, "STABILITY_BASE_URL": up.url,
                                "PRIVATE_URL_ALLOWLIST": "localhost"})
        ok = post(gw, "/v1/images/edits", {"model": "stable-image-core", "prompt": "a hat",
                                           "images": [{"image_url": localhost_url(receiver, "/to/img.png")}]})
        assert ok.status_code == 200, ok.text
        bad = post(gw, "/v1/images/edits", {"model": "stable-image-core", "prompt": "a hat", "images": [
            {"image_url": localhost_url(receiver, f"/to/x?abs={receiver.url}/img.png")}]})
        assert bad.status_code == 400, bad.text
        assert bad.json()["error"]["param"] == "image"
        assert [q.path for q in receiver.state.requests] == ["/to/img.png", "/img.png", "/to/x"]
        gw.assert_secret_absent(key)
    finally:
        up.stop()
