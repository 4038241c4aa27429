"""Self-tests of the fake GrsAi: stream mode, polling mode, quirks and failures on the real wire."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.upstreams import fake_grsai
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_grsai import GrsAiState
from tests.waits import await_until

STEP = 0.03
AUTH = {"Authorization": "Bearer sk-test"}
NANO = {"model": "nano-banana-fast", "prompt": "a red fox", "aspectRatio": "16:9"}


@pytest.fixture
def grs() -> Iterator[tuple[FakeServer, GrsAiState]]:
    state = GrsAiState(step_s=STEP)
    srv = fake_grsai.start(state)
    try:
        yield srv, state
    finally:
        srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def post_json(http: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with http.post(url, json=body, headers=AUTH) as r:
        assert r.status == 200
        return await r.json()


async def stream_raw(http: aiohttp.ClientSession, url: str, body: Any) -> tuple[str, bool]:
    """The raw stream body and whether it ended cleanly."""
    chunks: list[bytes] = []
    async with http.post(url, json=body, headers=AUTH) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"
        try:
            async for chunk in r.content.iter_any():
                chunks.append(chunk)
        except aiohttp.ClientPayloadError:
            return b"".join(chunks).decode(), False
    return b"".join(chunks).decode(), True


def parse_lines(raw: str) -> list[dict[str, Any]]:
    out = []
    for line in raw.split("\n"):
        if line.startswith("data:"):
            out.append(json.loads(line[5:]))
    return out


async def poll(http: aiohttp.ClientSession, base: str, tid: str) -> dict[str, Any]:
    res: dict[str, Any] = await post_json(http, f"{base}/v1/draw/result", {"id": tid})
    return res


async def poll_until_done(http: aiohttp.ClientSession, base: str, tid: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        res = await poll(http, base, tid)
        done = res["code"] == 0 and res["data"]["status"] != "running"
        data: dict[str, Any] | None = res["data"] if done else None
        return data

    data: dict[str, Any] | None = await await_until(finished, 10, interval=STEP / 2, what="the task to finish")
    assert data is not None
    return data


async def get_png(http: aiohttp.ClientSession, url: str) -> Image.Image:
    async with http.get(url) as r:
        assert r.status == 200 and r.content_type == "image/png"
        img = Image.open(io.BytesIO(await r.read()))
        img.load()
        return img.convert("RGB")


async def test_auth(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, state = grs
    async with http.post(f"{srv.url}/v1/draw/nano-banana", json=NANO) as r:
        assert r.status == 401 and await r.json() == {"code": -1, "msg": "apikey error"}
    state.api_key = "sk-right"
    async with http.post(f"{srv.url}/v1/draw/result", json={"id": "x"}, headers=AUTH) as r:
        assert r.status == 401
    assert state.submits == 0 and state.polls == 0


async def test_stream_success(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, state = grs
    body = {**NANO, "urls": ["https://example.com/ref.png"], "imageSize": "2K", "shutProgress": False}
    raw, clean = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", body)
    assert clean and raw.startswith("data: {") and raw.endswith("\n\n")
    snaps = parse_lines(raw)
    assert [s["progress"] for s in snaps] == [0, 25, 50, 75, 100]
    assert [s["status"] for s in snaps] == ["running"] * 4 + ["succeeded"]
    assert len({s["id"] for s in snaps}) == 1
    final = snaps[-1]
    assert final["failure_reason"] == "" and final["error"] == "" and len(final["results"]) == 1
    img = await get_png(http, final["results"][0]["url"])
    assert img.size == (128, 72)
    assert img.getcolors(maxcolors=2) == [(128 * 72, fake_grsai.prompt_color("a red fox"))]
    assert state.submits == 1
    assert state.requests[0].json == body


async def test_stream_quirks(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, state = grs
    state.no_space_after_data = True
    raw, _ = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", NANO)
    assert raw.startswith('data:{"id"') and "data: " not in raw
    assert parse_lines(raw)[-1]["status"] == "succeeded"

    state.no_space_after_data, state.no_newlines = False, True
    raw, _ = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", NANO)
    assert "\n" not in raw and raw.count("data: ") == 5

    state.no_newlines = False
    raw, _ = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", {**NANO, "shutProgress": True})
    snaps = parse_lines(raw)
    assert len(snaps) == 1 and snaps[0]["status"] == "succeeded"


async def test_stream_break_then_poll(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, state = grs
    state.break_stream_after = 2
    raw, clean = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", NANO)
    assert not clean
    snaps = parse_lines(raw)
    assert len(snaps) == 2 and snaps[-1]["status"] == "running"
    final = await poll_until_done(http, srv.url, snaps[0]["id"])
    assert final["status"] == "succeeded" and final["results"][0]["url"].endswith(".png")

    state.break_stream_clean = True
    raw, clean = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", NANO)
    assert clean and len(parse_lines(raw)) == 2
    assert state.submits == 2


async def test_polling_mode(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, state = grs
    state.step_s = 0.5  # the first poll must see it running, however loaded the machine is
    body = {"model": "gpt-image-2", "prompt": "two cats", "aspectRatio": "1024x1536", "variants": 2, "webHook": "-1"}
    ack = await post_json(http, f"{srv.url}/v1/draw/completions", body)
    assert ack["code"] == 0 and ack["msg"] == "success" and set(ack["data"]) == {"id"}
    tid = ack["data"]["id"]
    first = await poll(http, srv.url, tid)
    assert first["code"] == 0 and first["data"]["status"] == "running" and first["data"]["results"] == []
    final = await poll_until_done(http, srv.url, tid)
    assert final["progress"] == 100 and len(final["results"]) == 2
    for i, res in enumerate(final["results"]):
        img = await get_png(http, res["url"])
        assert img.size == (85, 128)
        assert img.getpixel((0, 0)) == fake_grsai.prompt_color("two cats", i)
    assert state.polls >= 2

    assert await poll(http, srv.url, "no-such-task") == {"code": -22, "msg": "task not found"}

    state.not_found_first_polls = 2
    ack = await post_json(http, f"{srv.url}/v1/draw/nano-banana", {**NANO, "webHook": "-1"})
    codes = [(await poll(http, srv.url, ack["data"]["id"]))["code"] for _ in range(3)]
    assert codes == [-22, -22, 0]


async def test_failures(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, state = grs
    raw, _ = await stream_raw(http, f"{srv.url}/v1/draw/nano-banana", {**NANO, "prompt": "NSFW thing"})
    snaps = parse_lines(raw)
    assert snaps[0]["status"] == "running" and snaps[-1]["status"] == "failed"
    assert snaps[-1]["failure_reason"] == "input_moderation" and snaps[-1]["error"]
    assert snaps[-1]["results"] == []

    state.output_moderation_prompts = ["gore"]
    state.error_prompts = ["glitch"]
    for prompt, reason in (("some gore", "output_moderation"), ("a glitch", "error")):
        ack = await post_json(http, f"{srv.url}/v1/draw/nano-banana", {**NANO, "prompt": prompt, "webHook": "-1"})
        final = await poll_until_done(http, srv.url, ack["data"]["id"])
        assert final["status"] == "failed" and final["failure_reason"] == reason and final["results"] == []

    bad = await post_json(http, f"{srv.url}/v1/draw/nano-banana", {"model": "nano-banana", "prompt": ""})
    assert bad["code"] != 0 and bad["msg"]
    wrong = await post_json(http, f"{srv.url}/v1/draw/completions", {"model": "nano-banana", "prompt": "x"})
    assert wrong["code"] != 0
    assert state.submits == 5


async def test_webhook_mode(grs: tuple[FakeServer, GrsAiState], http: aiohttp.ClientSession) -> None:
    srv, _ = grs
    received: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if received[-1]["status"] != "running":
            done.set()
        return web.Response(text="ok")

    runner = web.AppRunner(web.Application())
    runner.app.router.add_post("/cb", hook)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/cb"
        ack = await post_json(http, f"{srv.url}/v1/draw/nano-banana", {**NANO, "webHook": url})
        await asyncio.wait_for(done.wait(), 3)
    finally:
        await runner.cleanup()
    assert [r["progress"] for r in received] == [0, 25, 50, 75, 100]
    assert all(r["id"] == ack["data"]["id"] for r in received)
    assert received[-1]["status"] == "succeeded"
