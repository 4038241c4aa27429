"""Self-tests of the fake midjourney-proxy: it must speak the wire protocol a gateway will meet."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from tests.upstreams import fake_mj
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_mj import MJState
from tests.waits import await_until

STEP = 0.04
DATA_URL = "data:image/png;base64,iVBORw0KGgo="


@contextmanager
def serve(**options: Any) -> Iterator[FakeServer]:
    srv = fake_mj.start(**options)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def mj() -> Iterator[tuple[FakeServer, MJState]]:
    state = MJState(step_s=STEP)
    srv = fake_mj.start(state)
    try:
        yield srv, state
    finally:
        srv.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        yield s


async def post(http: aiohttp.ClientSession, url: str, body: Any, **headers: str) -> Any:
    async with http.post(url, json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def fetch(http: aiohttp.ClientSession, base: str, tid: str) -> dict[str, Any]:
    async with http.get(f"{base}/mj/task/{tid}/fetch") as r:
        assert r.status == 200
        out: dict[str, Any] = await r.json()
        return out


async def imagine(http: aiohttp.ClientSession, base: str, prompt: str = "a cat", **extra: Any) -> str:
    res = await post(http, f"{base}/mj/submit/imagine", {"prompt": prompt, **extra})
    assert res["code"] == 1, res
    tid: str = res["result"]
    return tid


async def wait_terminal(http: aiohttp.ClientSession, base: str, tid: str, limit_s: float = 3) -> dict[str, Any]:
    async def terminal() -> dict[str, Any] | None:
        task = await fetch(http, base, tid)
        return task if task["status"] in ("SUCCESS", "FAILURE", "CANCEL") else None

    task: dict[str, Any] | None = await await_until(terminal, limit_s, interval=STEP / 2, what=f"task {tid} to end")
    assert task is not None
    return task


async def get_image(http: aiohttp.ClientSession, url: str) -> Image.Image:
    async with http.get(url) as r:
        assert r.status == 200
        assert r.content_type == "image/png"
        img = Image.open(io.BytesIO(await r.read()))
        img.load()
        return img.convert("RGB")


def split_grid(img: Image.Image) -> list[Image.Image]:
    w, h = img.size
    boxes = [(0, 0, w // 2, h // 2), (w // 2, 0, w, h // 2), (0, h // 2, w // 2, h), (w // 2, h // 2, w, h)]
    return [img.crop(b) for b in boxes]


def solid(img: Image.Image) -> tuple[int, int, int]:
    """The single colour of an image (fails if it is not uniform)."""
    colors = img.getcolors(maxcolors=4)
    assert colors is not None and len(colors) == 1, colors
    c = colors[0][1]
    assert isinstance(c, tuple)
    return (c[0], c[1], c[2])


async def test_lifecycle_and_grid_quadrants(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, _ = mj
    tid = await imagine(http, srv.url, state="req-42")
    seen: list[tuple[str, str]] = []
    preview_url = None

    async def succeeded() -> dict[str, Any] | None:  # every state on the way is recorded
        nonlocal preview_url
        task = await fetch(http, srv.url, tid)
        if not seen or seen[-1] != (task["status"], task["progress"]):
            seen.append((task["status"], task["progress"]))
        if task["status"] == "IN_PROGRESS":
            preview_url = task["imageUrl"]
        return task if task["status"] == "SUCCESS" else None

    task: dict[str, Any] | None = await await_until(succeeded, 3, interval=STEP / 4, what="the task to succeed")
    assert task is not None
    assert [s for s, _ in seen][:2] == ["NOT_START", "SUBMITTED"]
    assert ("IN_PROGRESS", "10%") in seen and ("IN_PROGRESS", "68%") in seen
    assert seen[-1] == ("SUCCESS", "100%")
    assert task["state"] == "req-42" and task["action"] == "IMAGINE" and task["description"] == "/imagine a cat"
    assert task["submitTime"] <= task["startTime"] <= task["finishTime"]
    assert "imageUrls" not in task and "buttons" not in task

    grid = await get_image(http, task["imageUrl"])
    assert grid.size == (256, 256)
    colors = fake_mj.quadrant_colors(tid)
    assert len(set(colors)) == 4
    assert [solid(q) for q in split_grid(grid)] == colors

    assert preview_url is not None and "/preview/" in preview_url
    preview = await get_image(http, preview_url)
    assert preview.size[0] < 256 and (preview.getcolors(maxcolors=16) or []) == []  # blurred: many colours

    other = await imagine(http, srv.url, "a dog")
    assert fake_mj.quadrant_colors(other) != colors


async def test_submit_codes_forced(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, state = mj
    url = f"{srv.url}/mj/submit/imagine"
    state.next_codes.extend([21, 22, 23, 24, 3, 4, 9])
    r21 = await post(http, url, {"prompt": "x"})
    assert r21["code"] == 21 and r21["properties"]["status"] == "SUCCESS"
    assert r21["properties"]["imageUrl"].endswith(f"/mj/image/{r21['result']}.png")
    r22 = await post(http, url, {"prompt": "x"})
    assert r22["code"] == 22 and r22["properties"]["numberOfQueues"] == 2 and r22["result"]
    assert "排队中" in r22["description"]
    for code in (23, 24, 3, 4, 9):
        r = await post(http, url, {"prompt": "x"})
        assert r["code"] == code and r["result"] is None
        if code == 24:
            assert r["properties"]["bannedWord"]
    assert (await post(http, url, {"prompt": "x"}))["code"] == 1
    assert state.submits == 8
    queued = await wait_terminal(http, srv.url, r22["result"])
    assert queued["status"] == "SUCCESS"


async def test_submit_validation(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, state = mj
    url = f"{srv.url}/mj/submit/imagine"
    blank = await post(http, url, {"prompt": "  "})
    assert blank == {"code": 4, "description": "prompt不能为空", "result": None, "properties": {}}
    banned = await post(http, url, {"prompt": "a BadWord here"})
    assert banned["code"] == 24 and banned["properties"] == {"promptEn": "a BadWord here", "bannedWord": "badword"}
    bad64 = await post(http, url, {"prompt": "ok", "base64Array": ["not a data url"]})
    assert bad64["code"] == 4 and bad64["description"] == "base64格式错误"
    good = await post(http, url, {"prompt": "ok", "base64Array": [DATA_URL]})
    assert good["code"] == 1
    assert state.base64_arrays[good["result"]] == [DATA_URL]
    assert state.requests[-1].json["base64Array"] == [DATA_URL]


async def test_auth(http: aiohttp.ClientSession) -> None:
    with serve(secret="s3cret", step_s=STEP) as srv:
        url = f"{srv.url}/mj/submit/imagine"
        async with http.post(url, json={"prompt": "x"}) as r:
            assert r.status == 401 and await r.read() == b""
        async with http.post(url, json={"prompt": "x"}, headers={"mj-api-secret": "nope"}) as r:
            assert r.status == 401
        res = await post(http, url, {"prompt": "x"}, **{"mj-api-secret": "s3cret"})
        assert res["code"] == 1
        async with http.get(f"{srv.url}/mj/image/{res['result']}.png") as r:
            assert r.status == 200  # images need no auth
    with serve(secret="s3cret", auth_header="authorization", step_s=STEP) as srv:
        url = f"{srv.url}/mj/submit/imagine"
        async with http.post(url, json={"prompt": "x"}, headers={"mj-api-secret": "s3cret"}) as r:
            assert r.status == 401
        assert (await post(http, url, {"prompt": "x"}, Authorization="s3cret"))["code"] == 1


async def test_batched_polling_counters(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, state = mj
    ids = [await imagine(http, srv.url, f"p{i}") for i in range(5)]
    assert state.submits == 5
    tasks = await post(http, f"{srv.url}/mj/task/list-by-condition", {"ids": [*ids, "404404"]})
    assert [t["id"] for t in tasks] == ids
    assert state.polls == 1 and state.polled_ids == 6
    await fetch(http, srv.url, ids[0])
    assert state.polls == 2 and state.polled_ids == 7
    assert await post(http, f"{srv.url}/mj/task/list-by-condition", {"ids": None}) == []
    async with http.get(f"{srv.url}/mj/task/404404/fetch") as r:
        assert r.status == 200 and await r.read() == b""
    alias = await post(http, f"{srv.url}/mj-fast/mj/task/list-by-ids", {"ids": ids[:2]})
    assert len(alias) == 2


async def test_failure_hang_cancel(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, state = mj
    state.fail_prompts = ["--bad"]
    failed = await wait_terminal(http, srv.url, await imagine(http, srv.url, "cat --bad"))
    assert failed["status"] == "FAILURE" and failed["failReason"] == "[Invalid parameter] Invalid value"
    assert failed["progress"] == ""

    state.hang = True
    hung = await imagine(http, srv.url, "slow")
    state.hang = False
    # A task sent after it runs to the end meanwhile; the hung one stays where it stopped.
    await wait_terminal(http, srv.url, await imagine(http, srv.url, "quick"))
    task = await fetch(http, srv.url, hung)
    assert task["status"] == "IN_PROGRESS" and task["progress"] == "68%"

    res = await post(http, f"{srv.url}/mj/task/{hung}/cancel", {})
    assert res["code"] == 1
    cancelled = await fetch(http, srv.url, hung)
    assert cancelled["status"] == "CANCEL" and cancelled["failReason"] == "取消任务"
    assert (await post(http, f"{srv.url}/mj/task/{hung}/cancel", {}))["code"] == 4
    assert (await post(http, f"{srv.url}/mj/task/1/cancel", {}))["code"] == 3


async def test_upscale_change(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, _ = mj
    change = f"{srv.url}/mj/submit/change"
    parent = await imagine(http, srv.url, "grid")
    early = await post(http, change, {"taskId": parent, "action": "UPSCALE", "index": 2})
    assert early["code"] == 4  # parent not SUCCESS yet
    await wait_terminal(http, srv.url, parent)
    assert (await post(http, change, {"taskId": "123", "action": "UPSCALE", "index": 2}))["code"] == 3
    assert (await post(http, change, {"taskId": parent, "action": "UPSCALE"}))["code"] == 4

    res = await post(http, change, {"taskId": parent, "action": "UPSCALE", "index": 2})
    assert res["code"] == 1
    up = await wait_terminal(http, srv.url, res["result"])
    assert up["action"] == "UPSCALE" and up["status"] == "SUCCESS"
    img = await get_image(http, up["imageUrl"])
    assert img.size == (256, 256)
    assert solid(img) == fake_mj.quadrant_colors(parent)[1] == fake_mj.upscale_color(parent, 2)

    again = await post(http, change, {"taskId": parent, "action": "UPSCALE", "index": 2})
    assert again["code"] == 21 and again["result"] == res["result"]
    assert again["properties"]["status"] == "SUCCESS"

    simple = await post(http, f"{srv.url}/mj/submit/simple-change", {"content": f"{parent} U3"})
    assert simple["code"] == 1
    action = await post(
        http, f"{srv.url}/mj/submit/action", {"taskId": parent, "customId": f"MJ::JOB::upsample::4::{'0' * 32}"}
    )
    assert action["code"] == 1
    u4 = await wait_terminal(http, srv.url, action["result"])
    assert solid(await get_image(http, u4["imageUrl"])) == fake_mj.quadrant_colors(parent)[3]


async def test_tai_fork_extras(http: aiohttp.ClientSession) -> None:
    with serve(step_s=STEP, include_image_urls=True, include_buttons=True) as srv:
        tid = await imagine(http, srv.url)
        task = await wait_terminal(http, srv.url, tid)
        labels = [b["label"] for b in task["buttons"]]
        assert labels == ["U1", "U2", "U3", "U4", "", "V1", "V2", "V3", "V4"]
        upsample = task["buttons"][1]["customId"]
        assert upsample.startswith("MJ::JOB::upsample::2::")
        res = await post(http, f"{srv.url}/mj/submit/action", {"taskId": tid, "customId": upsample})
        up = await wait_terminal(http, srv.url, res["result"])
        assert up["buttons"] == [] and "imageUrls" not in up
        assert len(task["imageUrls"]) == 4
        for i, entry in enumerate(task["imageUrls"]):
            assert solid(await get_image(http, entry["url"])) == fake_mj.quadrant_colors(tid)[i]
            assert solid(await get_image(http, entry["thumbnail"])) == fake_mj.quadrant_colors(tid)[i]


async def test_dropped_connections(mj: tuple[FakeServer, MJState], http: aiohttp.ClientSession) -> None:
    srv, state = mj
    state.drop_next_n = 1
    with pytest.raises(aiohttp.ClientError):
        await imagine(http, srv.url)
    assert state.submits == 0 and not state.tasks
    state.drop_after_accept_n = 1
    with pytest.raises(aiohttp.ClientError):
        await imagine(http, srv.url)
    assert state.submits == 1 and len(state.tasks) == 1  # accepted, answer lost
    await imagine(http, srv.url)


async def test_notify_hook(http: aiohttp.ClientSession) -> None:
    received: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        if received[-1]["status"] == "SUCCESS":
            done.set()
        return web.Response(text="ok")

    runner = web.AppRunner(web.Application())
    runner.app.router.add_post("/hook", hook)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        with serve(step_s=STEP) as srv:
            tid = await imagine(http, srv.url, notifyHook=f"http://127.0.0.1:{port}/hook")
            await asyncio.wait_for(done.wait(), 3)
    finally:
        await runner.cleanup()
    statuses = [r["status"] for r in received]
    assert all(r["id"] == tid for r in received)
    assert statuses[-1] == "SUCCESS" and "IN_PROGRESS" in statuses
    assert received[-1]["imageUrl"].endswith(f"/mj/image/{tid}.png")
    keys = [f"{r['status']}:{r['progress']}" for r in received]
    assert len(keys) == len(set(keys))  # one POST per change
