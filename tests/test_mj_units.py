"""Pure parts of the Midjourney adapter and the task machinery: prompt, codes, grid, limiter, store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from image_gateway.core.types import ImageRequest
from image_gateway.engine.sqlite_store import SqliteTaskStore
from image_gateway.engine.store import TaskRecord
from image_gateway.engine.webhooks import sign, valid_url
from image_gateway.errors import GatewayError
from image_gateway.media.grid import split_grid
from image_gateway.providers import mj_wire as wire
from image_gateway.providers.limits import AccountLimiter, QueueFull
from tests.waits import await_until


def req(prompt: str, extra: dict[str, Any] | None = None, **kw: Any) -> ImageRequest:
    return ImageRequest(operation="generate", prompt=prompt, model="m", extra=dict(extra or {}), **kw)


@pytest.mark.parametrize(("prompt", "kw", "version", "expected"), [
    ("a cat", {}, "--v 7", "a cat --v 7"),
    ("a cat", {"size": "1792x1024"}, "--v 7", "a cat --ar 7:4 --v 7"),
    ("a cat", {"size": "1024x1024"}, "--v 7", "a cat --v 7"),
    ("a cat", {"size": "auto"}, "--niji 6", "a cat --niji 6"),
    ("a cat --aspect 2:3", {"size": "1536x1024"}, "--v 7", "a cat --aspect 2:3 --v 7"),
    ("a cat --v 6.1", {}, "--v 7", "a cat --v 6.1"),
    ("a cat --niji 6", {}, "--v 7", "a cat --niji 6"),
    ("a cat --q .5", {"quality": "high"}, "--v 7", "a cat --q .5 --v 7"),
    ("a cat", {"quality": "medium", "style": "vivid"}, "--v 7", "a cat --v 7"),
    ("a cat", {"style": "natural", "quality": "hd"}, "--v 5.2", "a cat --q 2 --style raw --v 5.2"),
    ("a cat", {"extra": {"seed": 42, "negative_prompt": "dogs, --birds"}}, "--v 7",
     "a cat --seed 42 --no dogs, birds --v 7"),
    ("a cat", {"extra": {"aspect_ratio": "16:9"}}, "--v 7", "a cat --ar 16:9 --v 7"),
    ("  a\n cat  ", {"size": "640x480"}, "", "a cat --ar 4:3"),
])
def test_build_prompt(prompt: str, kw: dict[str, Any], version: str, expected: str) -> None:
    assert wire.build_prompt(req(prompt, **kw), version) == expected


def _code(code: int, **extra: object) -> str:
    return wire.submit_task_id(200, {"code": code, "description": "desc", "result": extra.pop("result", None),
                                     "properties": extra}, b"", [], 12.0)


def test_submit_codes() -> None:
    assert _code(1, result="123") == "123"
    assert _code(22, result="124", numberOfQueues=3) == "124"
    assert _code(21, result="125", status="SUCCESS") == "125"
    assert wire.submit_task_id(200, {"code": 1, "result": ["9", "8"]}, b"", [], 1) == "9"
    cases = {23: (429, "upstream_queue_full"), 24: (400, "content_policy_violation"),
             3: (503, "upstream_unavailable"), 4: (400, "invalid_value"), 9: (502, "upstream_error"),
             77: (502, "upstream_error")}
    for code, (status, err_code) in cases.items():
        with pytest.raises(GatewayError) as ei:
            _code(code, bannedWord="nsfwword")
        assert (ei.value.status, ei.value.code) == (status, err_code), code
        if code == 23:
            assert ei.value.headers == {"Retry-After": "12"} and ei.value.retryable
        if code == 24:
            assert "'nsfwword'" in ei.value.message and ei.value.param == "prompt"
    with pytest.raises(GatewayError) as ei:
        wire.submit_task_id(401, None, b"", [], 1)
    assert ei.value.status == 401
    with pytest.raises(GatewayError) as ei:
        wire.submit_task_id(500, None, b"<html>oops</html>", [], 1)
    assert ei.value.retryable and "<html>" not in ei.value.message
    with pytest.raises(GatewayError) as ei:  # a key echoed in an upstream text never reaches the caller
        wire.submit_task_id(200, {"code": 4, "description": "bad key mj-secret-123456"}, b"", ["mj-secret-123456"], 1)
    assert "mj-secret-123456" not in ei.value.message


def test_task_fields() -> None:
    assert wire.percent_of({"status": "IN_PROGRESS", "progress": "37%"}) == 37
    assert wire.percent_of({"status": "SUCCESS", "progress": ""}) == 100
    assert wire.percent_of({"status": "FAILURE", "progress": ""}) == 0
    assert wire.image_urls_of({"imageUrls": [{"url": "https://x/0.png"}, "https://x/1.png", {"url": None}]}) == [
        "https://x/0.png", "https://x/1.png"]
    err = wire.task_failure({"id": "1", "status": "FAILURE", "failReason": "banned"}, [])
    assert err.code == "upstream_task_failed" and "banned" in err.message and err.retryable
    assert wire.task_failure({"id": "1", "status": "CANCEL"}, []).code == "upstream_cancelled"


def test_split_grid_quadrants_in_button_order() -> None:
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    img = Image.new("RGB", (200, 120))
    for i, c in enumerate(colors):
        x, y = (i % 2) * 100, (i // 2) * 60
        img.paste(c, (x, y, x + 100, y + 60))
    for fmt in ("PNG", "WEBP"):
        buf = io.BytesIO()
        img.save(buf, fmt, lossless=True) if fmt == "WEBP" else img.save(buf, fmt)
        parts = [Image.open(io.BytesIO(p)).convert("RGB") for p in split_grid(buf.getvalue())]
        assert [p.size for p in parts] == [(100, 60)] * 4
        got = [px for p in parts if isinstance(px := p.getpixel((50, 30)), tuple)]
        assert len(got) == 4
        assert all(abs(a - b) <= 3 for g, c in zip(got, colors, strict=True) for a, b in zip(g, c, strict=True)), got


async def test_limiter_queues_fifo_then_refuses() -> None:
    lim = AccountLimiter(limit=2, queue_size=2, retry_after_s=5)
    assert await lim.acquire() == 1 and await lim.acquire() == 1
    order: list[str] = []

    async def wait(name: str) -> None:
        await lim.acquire()
        order.append(name)

    a, b = asyncio.create_task(wait("a")), asyncio.create_task(wait("b"))
    await await_until(lambda: lim.waiting == 2, what="both in the queue")
    with pytest.raises(QueueFull) as ei:
        await lim.acquire()
    assert ei.value.status == 429 and ei.value.headers == {"Retry-After": "5"}
    lim.release(1)
    await a
    assert order == ["a"] and lim.in_use == 2
    b.cancel()  # a waiter that gives up leaves the line
    await asyncio.gather(b, return_exceptions=True)
    assert lim.waiting == 0


async def test_limiter_caps_a_request_at_the_limit() -> None:
    lim = AccountLimiter(limit=3, queue_size=0)
    assert await lim.acquire(7) == 3
    with pytest.raises(QueueFull):
        await lim.acquire()


async def test_sqlite_store_round_trip(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "t.sqlite3")
    await store.open()
    now = time.time()
    running = TaskRecord("a", "mj-v7", "mj-v7", "in_progress", now, now, "request", "midjourney", "http://mj",
                         37, {"tasks": ["1"]}, {"stream": False}, None, None, "http://hook", None, now + 60)
    done = TaskRecord("b", "demo", "demo", "succeeded", now - 100, now - 100, result={"created": 1, "data": []},
                      webhook_url="http://hook", webhook_status="pending")
    await store.save([running, done])
    assert await store.get("a") == running
    assert [r.id for r in await store.unfinished()] == ["a"]
    assert [r.id for r in await store.undelivered()] == ["b"]
    running.status = "succeeded"
    await store.save([running])
    saved = await store.get("a")
    assert saved is not None and saved.status == "succeeded"
    assert await store.sweep(now - 50) == 1 and await store.get("b") is None
    await store.close()
    assert (tmp_path / "t.sqlite3-wal").exists() or (tmp_path / "t.sqlite3").exists()


def test_webhook_signature_and_urls() -> None:
    assert sign("s3cret", b"{}") == "sha256=" + hmac.new(b"s3cret", b"{}", hashlib.sha256).hexdigest()
    assert valid_url("https://example.com/hook?t=1") and valid_url("http://127.0.0.1:9/x")
    assert not valid_url("ftp://example.com") and not valid_url("https://") and not valid_url("/relative")
