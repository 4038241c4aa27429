"""Fake midjourney-proxy (protocols.md §2): a real aiohttp server speaking the `/mj` REST protocol.

Wire behaviour follows novicezk/midjourney-proxy (MJ-NZK) with the trueai-org fork (MJ-TAI) extras
a gateway may meet: `CANCEL` status, `imageUrls`, `/mj/task/{id}/cancel`, `/mj/task/list-by-ids`,
mode-prefixed routes (`/mj-fast/mj/...`).

Task lifecycle is derived on read from the time elapsed since submit, so 10,000 tasks in flight cost a
small slotted object each and no timer/task/thread per job. With `step_s` seconds per step:

    step 0        NOT_START    progress "0%"
    step 1        SUBMITTED    progress "0%"
    step 2..2+P-1 IN_PROGRESS  progress f"{progress_steps[i]}%", imageUrl = blurred preview PNG
    step 2+P      SUCCESS      progress "100%", imageUrl = 256x256 2x2 grid PNG
(a task that fails goes FAILURE at step 2 with progress ""; a queued (code 22) task stays NOT_START for
`numberOfQueues` extra steps; a hung task stays IN_PROGRESS at the last progress step forever).

Grid layout: four solid 128x128 quadrants, U1 top-left, U2 top-right, U3 bottom-left, U4 bottom-right,
coloured `quadrant_colors(task_id)[0..3]` (four hues 90 degrees apart, offset derived from the task id).
An UPSCALE of index i yields a 256x256 solid image of the parent's quadrant i colour
(`upscale_color(parent_id, i)`). Images are served, without auth, at `GET /mj/image/<id>.png`,
`GET /mj/preview/<id>.png?progress=<p>` (less blur as p grows)
and (MJ-TAI `imageUrls`) `GET /mj/image/<id>/0_<i>.png` (+ `0_<i>_thumb.png`).

Run by hand: `python -m tests.upstreams.fake_mj --port 8080 [--secret S] [--step-s 0.2]`.
"""

from __future__ import annotations

import argparse
import asyncio
import colorsys
import contextlib
import hashlib
import io
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache
from typing import Any

import msgspec
from aiohttp import ClientSession, ClientTimeout, web
from PIL import Image, ImageFilter

from .base import FakeServer, FakeState, Handler, Recorded, recording_middleware, serve_forever

GRID_SIZE = 256
TILE = GRID_SIZE // 2
PREVIEW_SIZE = 64
THUMB_SIZE = 32
DISCORD_INSTANCE_ID = "1118138338562560102"
GRID_ACTIONS = frozenset({"IMAGINE", "VARIATION", "REROLL", "BLEND"})
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCEL"})
MODE_PREFIXES = ("", "/mj-fast", "/mj-turbo", "/mj-relax")
CANCEL_REASON = "取消任务"

DESCRIPTIONS = {
    1: "提交成功",
    3: "关联任务不存在或已失效",
    4: "参数错误",
    9: "提交失败，系统异常",
    21: "任务已存在",
    22: "排队中，前面还有{n}个任务",
    23: "队列已满，请稍后尝试",
    24: "可能包含敏感词",
}

Color = tuple[int, int, int]
_encode = msgspec.json.Encoder().encode  # raw UTF-8 like Jackson; fast enough for 10k-task lists


def _json(obj: Any) -> web.Response:
    return web.Response(body=_encode(obj), content_type="application/json")


# ---------------------------------------------------------------------------------------------- images


def quadrant_colors(task_id: str) -> list[Color]:
    """Colours of a grid task's quadrants in U1..U4 order (TL, TR, BL, BR). Pure function of the id."""
    h = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big")
    base = (h % 360) / 360.0
    out: list[Color] = []
    for i in range(4):
        r, g, b = colorsys.hsv_to_rgb((base + i * 0.25) % 1.0, 0.85, 0.9)
        out.append((round(r * 255), round(g * 255), round(b * 255)))
    return out


def upscale_color(parent_id: str, index: int) -> Color:
    """Colour of the full-size image an UPSCALE of `index` (1..4) of `parent_id` yields."""
    return quadrant_colors(parent_id)[index - 1]


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@lru_cache(maxsize=512)
def grid_png(colors: tuple[Color, ...]) -> bytes:
    img = Image.new("RGB", (GRID_SIZE, GRID_SIZE))
    for i, c in enumerate(colors):
        x, y = (i % 2) * TILE, (i // 2) * TILE
        img.paste(c, (x, y, x + TILE, y + TILE))
    return _png(img)


@lru_cache(maxsize=512)
def solid_png(color: Color, size: int) -> bytes:
    return _png(Image.new("RGB", (size, size), color))


@lru_cache(maxsize=512)
def preview_png(colors: tuple[Color, ...], progress: int = 0) -> bytes:
    """A small, blurred version of the final image (what Discord shows mid-generation); the further
    along, the less blurred (radius 16 px at 0 % down to 4 px)."""
    src = Image.open(io.BytesIO(grid_png(colors) if len(colors) == 4 else solid_png(colors[0], GRID_SIZE)))
    radius = max(4, round(16 * (100 - max(0, min(100, progress))) / 100))
    return _png(src.convert("RGB").resize((PREVIEW_SIZE, PREVIEW_SIZE)).filter(ImageFilter.GaussianBlur(radius)))


# ---------------------------------------------------------------------------------------------- state


class MJTask:
    __slots__ = (
        "action",
        "cancel_at",
        "description",
        "fail_reason",
        "hook",
        "id",
        "index",
        "outcome",
        "parent",
        "prompt",
        "state",
        "step",
        "submit_ms",
        "t0",
        "wait_steps",
    )

    def __init__(self, tid: str, action: str, prompt: str, step: float) -> None:
        self.id = tid
        self.action = action
        self.prompt = prompt
        self.step = step
        self.t0 = time.monotonic()
        self.submit_ms = int(time.time() * 1000)
        self.state: str | None = None
        self.description = ""
        self.outcome = "S"  # S success, F failure, H hang
        self.fail_reason: str | None = None
        self.parent: str | None = None
        self.index = 0
        self.hook: str | None = None
        self.wait_steps = 0
        self.cancel_at: float | None = None  # monotonic time of the cancel

    def colors(self) -> tuple[Color, ...]:
        if self.action == "UPSCALE" and self.parent is not None:
            return (upscale_color(self.parent, self.index),)
        return tuple(quadrant_colors(self.id))


class MJState(FakeState):
    """Knobs (set in the constructor or at any time from the test thread):

    secret              required auth value when set (else no auth); mismatch -> HTTP 401, empty body
    auth_header         header carrying it: "mj-api-secret" (MJ-NZK) or "authorization" (raw value, MJ-TAI)
    step_s              seconds per lifecycle step (default 0.2)
    progress_steps      IN_PROGRESS progress values (default [10, 37, 68])
    next_codes          deque of forced submit codes (1, 3, 4, 9, 21, 22, 23, 24), consumed one per submit
    queue_ahead         numberOfQueues reported (and extra NOT_START steps) for a code-22 answer
    banned_words        prompt words answered with code 24 (default {"badword"})
    fail_prompts        prompt substrings whose tasks end in FAILURE with `fail_reason`
    hang                tasks submitted while True never leave IN_PROGRESS
    drop_next_n         drop the connection (no answer) for the next n API calls
    drop_after_accept_n accept the next n submits (task created) but drop the connection instead of answering
    include_image_urls  MJ-TAI `imageUrls` on SUCCESS grid tasks
    include_buttons     plus/MJ-TAI/new-api `buttons` (U1-U4, reroll, V1-V4) on SUCCESS grid tasks; off by
                        default (MJ-NZK has none, and they are 3/4 of a 10k-task list-by-condition answer)
    public_url          base for image URLs (default: http://<Host header>)
    max_recorded        keep at most this many Recorded requests (bench); None = keep all
    Counters: submits, polls (1 per fetch or list-by-condition call), polled_ids (ids asked for),
    hook_posts [(task id, status, progress)], base64_arrays {task id: base64Array}.
    """

    def __init__(
        self,
        *,
        secret: str | None = None,
        auth_header: str = "mj-api-secret",
        step_s: float = 0.2,
        progress_steps: Iterable[int] = (10, 37, 68),
        banned_words: Iterable[str] = ("badword",),
        fail_prompts: Iterable[str] = (),
        fail_reason: str = "[Invalid parameter] Invalid value",
        hang: bool = False,
        include_image_urls: bool = False,
        include_buttons: bool = False,
        queue_ahead: int = 2,
        public_url: str | None = None,
        max_recorded: int | None = None,
    ) -> None:
        super().__init__()
        self.secret = secret
        self.auth_header = auth_header.lower()
        self.step_s = step_s
        self.progress_steps = list(progress_steps)
        self.banned_words = set(banned_words)
        self.fail_prompts = list(fail_prompts)
        self.fail_reason = fail_reason
        self.hang = hang
        self.include_image_urls = include_image_urls
        self.include_buttons = include_buttons
        self.queue_ahead = queue_ahead
        self.public_url = public_url
        self.max_recorded = max_recorded
        self.next_codes: deque[int] = deque()
        self.drop_next_n = 0
        self.drop_after_accept_n = 0
        self.submits = 0
        self.polls = 0
        self.polled_ids = 0
        self.tasks: dict[str, MJTask] = {}
        self.upscales: dict[tuple[str, int], str] = {}
        self.base64_arrays: dict[str, list[str]] = {}
        self.hooked: dict[str, str] = {}  # task id -> last notified "status:progress"
        self.hook_posts: list[tuple[str, str, str]] = []
        self.seen_base = "http://127.0.0.1"
        self._last_id = 0

    def new_id(self) -> str:
        cand = int(time.time() * 1000) * 1000 + random.randint(0, 999)
        self._last_id = max(cand, self._last_id + 1)
        return str(self._last_id)

    def base_url(self) -> str:
        return self.public_url or self.seen_base

    # -- lifecycle, computed on read ------------------------------------------------------------------

    def phase(self, t: MJTask, now: float | None = None) -> tuple[str, str, int | None, int | None]:
        """(status, progress, startTime, finishTime) of a task at monotonic time `now`."""
        now = time.monotonic() if now is None else now
        if t.cancel_at is not None and t.cancel_at <= now:
            return "CANCEL", "", None, t.submit_ms + int((t.cancel_at - t.t0) * 1000)
        k = int((now - t.t0) / t.step) - t.wait_steps
        n_prog = max(1, len(self.progress_steps))
        start_ms = t.submit_ms + int((2 + t.wait_steps) * t.step * 1000)
        if k <= 0:
            return "NOT_START", "0%", None, None
        if k == 1:
            return "SUBMITTED", "0%", None, None
        if t.outcome == "F":
            return "FAILURE", "", start_ms, start_ms
        if k < 2 + n_prog or t.outcome == "H":
            i = min(k - 2, n_prog - 1)
            prog = self.progress_steps[i] if self.progress_steps else 0
            return "IN_PROGRESS", f"{prog}%", start_ms, None
        return "SUCCESS", "100%", start_ms, start_ms + int(n_prog * t.step * 1000)

    def task_json(self, t: MJTask, base: str | None = None, now: float | None = None) -> dict[str, Any]:
        base = base or self.base_url()
        status, progress, start, finish = self.phase(t, now)
        image_url: str | None = None
        if status == "IN_PROGRESS":  # a new URL per step, like the Discord attachment of each update
            image_url = f"{base}/mj/preview/{t.id}.png?progress={progress.rstrip('%')}"
        elif status == "SUCCESS":
            image_url = f"{base}/mj/image/{t.id}.png"
        props: dict[str, Any] = {"finalPrompt": t.prompt, "discordInstanceId": DISCORD_INSTANCE_ID}
        if t.hook:
            props["notifyHook"] = t.hook
        fail_reason = t.fail_reason if status == "FAILURE" else CANCEL_REASON if status == "CANCEL" else None
        out: dict[str, Any] = {
            "id": t.id,
            "action": t.action,
            "prompt": t.prompt,
            "promptEn": t.prompt,
            "description": t.description,
            "state": t.state,
            "submitTime": t.submit_ms,
            "startTime": start,
            "finishTime": finish,
            "progress": progress,
            "imageUrl": image_url,
            "status": status,
            "failReason": fail_reason,
            "properties": props,
        }
        if self.include_buttons:
            out["buttons"] = _buttons(t.id) if status == "SUCCESS" and t.action in GRID_ACTIONS else []
        if self.include_image_urls and status == "SUCCESS" and t.action in GRID_ACTIONS:
            out["imageUrls"] = [
                {"url": f"{base}/mj/image/{t.id}/0_{i}.png", "thumbnail": f"{base}/mj/image/{t.id}/0_{i}_thumb.png"}
                for i in range(4)
            ]
        return out

    def status_of(self, task_id: str) -> str:
        return self.phase(self.tasks[task_id])[0]


def _buttons(tid: str) -> list[dict[str, Any]]:
    h = hashlib.md5(tid.encode()).hexdigest()
    buttons = [{"customId": f"MJ::JOB::upsample::{i}::{h}", "emoji": "", "label": f"U{i}"} for i in range(1, 5)]
    buttons.append({"customId": f"MJ::JOB::reroll::0::{h}::SOLO", "emoji": "🔄", "label": ""})
    buttons += [{"customId": f"MJ::JOB::variation::{i}::{h}", "emoji": "", "label": f"V{i}"} for i in range(1, 5)]
    return [{**b, "type": 2, "style": 2} for b in buttons]


STATE_KEY = web.AppKey("mj_state", MJState)


# ---------------------------------------------------------------------------------------------- helpers


def _vo(code: int, result: str | None = None, description: str | None = None, **props: Any) -> web.Response:
    body: dict[str, Any] = {
        "code": code,
        "description": description or DESCRIPTIONS.get(code, "失败"),
        "result": result,
        "properties": props,
    }
    return _json(body)


def _drop(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()
    raise asyncio.CancelledError


def _body(request: web.Request) -> dict[str, Any]:
    rec: Recorded = request["rec"]
    return rec.json if isinstance(rec.json, dict) else {}


def _state(request: web.Request) -> MJState:
    return request.app[STATE_KEY]


def _is_data_url(s: Any) -> bool:
    return isinstance(s, str) and s.startswith("data:") and ";base64," in s


def _api_path(path: str) -> bool:
    return any(p in path for p in ("/mj/submit/", "/mj/task/", "/mj/account/"))


def mj_middleware(state: MJState) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.seen_base = f"http://{request.host}"
        if state.max_recorded is not None and len(state.requests) > state.max_recorded:
            with state.lock:
                del state.requests[: len(state.requests) - state.max_recorded // 2]
        if _api_path(request.path):
            if state.drop_next_n > 0:
                state.drop_next_n -= 1
                _drop(request)
            if state.secret is not None:
                got = request.headers.get(state.auth_header)
                if got != state.secret:
                    return web.Response(status=401)
        return await handler(request)

    return mw


# ---------------------------------------------------------------------------------------------- submit


def _new_task(state: MJState, action: str, prompt: str, body: dict[str, Any]) -> MJTask:
    t = MJTask(state.new_id(), action, prompt, state.step_s)
    st = body.get("state")
    t.state = st if isinstance(st, str) else None
    hook = body.get("notifyHook")
    if isinstance(hook, str) and hook:
        t.hook = hook
        state.hooked[t.id] = ""
    if state.hang:
        t.outcome = "H"
    if any(s and s in prompt for s in state.fail_prompts):
        t.outcome = "F"
        t.fail_reason = state.fail_reason
    state.tasks[t.id] = t
    return t


def _accept(request: web.Request, state: MJState, t: MJTask, forced: int | None) -> web.Response:
    if forced == 22:
        t.wait_steps = state.queue_ahead
    if state.drop_after_accept_n > 0:
        state.drop_after_accept_n -= 1
        _drop(request)
    if forced == 22:
        n = state.queue_ahead
        return _vo(22, t.id, DESCRIPTIONS[22].format(n=n), numberOfQueues=n, discordInstanceId=DISCORD_INSTANCE_ID)
    if forced == 21:
        # "already exists": answer with a task that is already finished
        t.t0 -= (3 + max(1, len(state.progress_steps))) * t.step
        t.submit_ms -= int((3 + max(1, len(state.progress_steps))) * t.step * 1000)
        j = state.task_json(t)
        return _vo(21, t.id, status=j["status"], imageUrl=j["imageUrl"], discordInstanceId=DISCORD_INSTANCE_ID)
    return _vo(1, t.id, discordInstanceId=DISCORD_INSTANCE_ID)


def _take_forced(state: MJState) -> tuple[int | None, web.Response | None]:
    state.submits += 1
    forced = state.next_codes.popleft() if state.next_codes else None
    if forced is None or forced in (1, 21, 22):
        return forced, None
    if forced == 24:
        return forced, _vo(24, None, promptEn="forced", bannedWord="forced")
    return forced, _vo(forced)


def _check_base64_list(body: dict[str, Any]) -> list[str] | None:
    arr = body.get("base64Array")
    if arr is None:
        arr = [body["base64"]] if body.get("base64") else []
    if not isinstance(arr, list) or not all(_is_data_url(s) for s in arr):
        return None
    return arr


async def submit_imagine(request: web.Request) -> web.Response:
    state = _state(request)
    forced, answer = _take_forced(state)
    if answer is not None:
        return answer
    body = _body(request)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        return _vo(4, None, "prompt不能为空")
    images = _check_base64_list(body)
    if images is None:
        return _vo(4, None, "base64格式错误")
    low = prompt.lower()
    for word in sorted(state.banned_words):
        if word.lower() in low:
            return _vo(24, None, promptEn=prompt, bannedWord=word)
    t = _new_task(state, "IMAGINE", prompt, body)
    t.description = f"/imagine {prompt}"
    if images:
        state.base64_arrays[t.id] = images
    return _accept(request, state, t, forced)


async def submit_blend(request: web.Request) -> web.Response:
    state = _state(request)
    forced, answer = _take_forced(state)
    if answer is not None:
        return answer
    body = _body(request)
    images = _check_base64_list(body)
    if images is None or not 2 <= len(images) <= 5:
        return _vo(4, None, "base64List参数错误")
    t = _new_task(state, "BLEND", "", body)
    t.description = f"/blend {t.id} {len(images)}"
    state.base64_arrays[t.id] = images
    return _accept(request, state, t, forced)


async def submit_describe(request: web.Request) -> web.Response:
    state = _state(request)
    forced, answer = _take_forced(state)
    if answer is not None:
        return answer
    body = _body(request)
    if not _is_data_url(body.get("base64")):
        return _vo(4, None, "base64格式错误")
    t = _new_task(state, "DESCRIBE", "1️⃣ a picture --ar 1:1\n\n2️⃣ an image --ar 1:1", body)
    t.description = f"/describe {t.id}.png"
    state.base64_arrays[t.id] = [body["base64"]]
    return _accept(request, state, t, forced)


async def _change(
    request: web.Request, state: MJState, forced: int | None, parent_id: Any, action: Any, index: Any
) -> web.Response:
    body = _body(request)
    if not isinstance(parent_id, str) or not parent_id:
        return _vo(4, None, "taskId不能为空")
    if action not in ("UPSCALE", "VARIATION", "REROLL"):
        return _vo(4, None, "action参数错误")
    if action != "REROLL" and (not isinstance(index, int) or not 1 <= index <= 4):
        return _vo(4, None, "index参数错误")
    parent = state.tasks.get(parent_id)
    if parent is None:
        return _vo(3, None, DESCRIPTIONS[3])
    if parent.action not in GRID_ACTIONS or state.phase(parent)[0] != "SUCCESS":
        return _vo(4, None, "关联任务状态错误")
    if action == "UPSCALE":
        existing = state.upscales.get((parent_id, index))
        if existing is not None:
            j = state.task_json(state.tasks[existing])
            return _vo(21, existing, status=j["status"], imageUrl=j["imageUrl"])
    t = _new_task(state, action, parent.prompt, body)
    t.parent = parent_id
    t.index = index if isinstance(index, int) else 0
    if action == "UPSCALE":
        state.upscales[(parent_id, t.index)] = t.id
        t.description = f"/up {parent_id} U{t.index}"
    elif action == "VARIATION":
        t.description = f"/up {parent_id} V{t.index}"
    else:
        t.description = f"/up {parent_id} R"
    return _accept(request, state, t, forced)


async def submit_change(request: web.Request) -> web.Response:
    state = _state(request)
    forced, answer = _take_forced(state)
    if answer is not None:
        return answer
    body = _body(request)
    return await _change(request, state, forced, body.get("taskId"), body.get("action"), body.get("index"))


async def submit_simple_change(request: web.Request) -> web.Response:
    state = _state(request)
    forced, answer = _take_forced(state)
    if answer is not None:
        return answer
    content = _body(request).get("content")
    parts = content.split() if isinstance(content, str) else []
    if len(parts) != 2 or parts[1][:1].upper() not in ("U", "V", "R"):
        return _vo(4, None, "content参数错误")
    op = parts[1].upper()
    action = {"U": "UPSCALE", "V": "VARIATION", "R": "REROLL"}[op[0]]
    index: Any = int(op[1:]) if op[1:].isdigit() else None
    return await _change(request, state, forced, parts[0], action, index)


async def submit_action(request: web.Request) -> web.Response:
    """Plus / MJ-TAI button action; only upsample, variation and reroll custom ids are understood."""
    state = _state(request)
    forced, answer = _take_forced(state)
    if answer is not None:
        return answer
    body = _body(request)
    custom = body.get("customId")
    parts = custom.split("::") if isinstance(custom, str) else []
    kinds = {"upsample": "UPSCALE", "variation": "VARIATION", "reroll": "REROLL"}
    if len(parts) < 4 or parts[:2] != ["MJ", "JOB"] or parts[2] not in kinds:
        return _vo(4, None, "customId参数错误")
    index: Any = int(parts[3]) if parts[3].isdigit() else None
    return await _change(request, state, forced, body.get("taskId"), kinds[parts[2]], index)


# ---------------------------------------------------------------------------------------------- query


async def fetch(request: web.Request) -> web.Response:
    state = _state(request)
    state.polls += 1
    state.polled_ids += 1
    t = state.tasks.get(request.match_info["tid"])
    if t is None:
        return web.Response(status=200)  # MJ-NZK: a null body
    return _json(state.task_json(t, state.public_url or f"http://{request.host}"))


async def list_by_condition(request: web.Request) -> web.Response:
    state = _state(request)
    ids = _body(request).get("ids")
    ids = ids if isinstance(ids, list) else []
    state.polls += 1
    state.polled_ids += len(ids)
    base, now = state.public_url or f"http://{request.host}", time.monotonic()
    out = [state.task_json(state.tasks[i], base, now) for i in ids if isinstance(i, str) and i in state.tasks]
    return _json(out)


async def list_all(request: web.Request) -> web.Response:
    state = _state(request)
    now = time.monotonic()
    out = [state.task_json(t, None, now) for t in state.tasks.values()]
    if request.path.endswith("/queue"):
        out = [j for j in out if j["status"] not in TERMINAL]
    return _json(out)


async def cancel(request: web.Request) -> web.Response:
    state = _state(request)
    tid = request.match_info["tid"]
    t = state.tasks.get(tid)
    if t is None:
        return _vo(3, None, "任务不存在")
    if state.phase(t)[0] in TERMINAL:
        return _vo(4, tid, "任务已结束")
    t.cancel_at = time.monotonic()
    return _vo(1, tid, "成功")


# ---------------------------------------------------------------------------------------------- images


def _png_response(data: bytes) -> web.Response:
    return web.Response(body=data, content_type="image/png")


async def image(request: web.Request) -> web.Response:
    t = _state(request).tasks.get(request.match_info["tid"])
    if t is None:
        raise web.HTTPNotFound()
    colors = t.colors()
    return _png_response(grid_png(colors) if len(colors) == 4 else solid_png(colors[0], GRID_SIZE))


async def image_part(request: web.Request) -> web.Response:
    t = _state(request).tasks.get(request.match_info["tid"])
    i = int(request.match_info["i"])
    if t is None or t.action not in GRID_ACTIONS or i > 3:
        raise web.HTTPNotFound()
    size = THUMB_SIZE if request.match_info["thumb"] else TILE
    return _png_response(solid_png(quadrant_colors(t.id)[i], size))


async def preview(request: web.Request) -> web.Response:
    t = _state(request).tasks.get(request.match_info["tid"])
    if t is None:
        raise web.HTTPNotFound()
    p = request.query.get("progress", "0")
    return _png_response(preview_png(t.colors(), int(p) if p.isdigit() else 0))


# ---------------------------------------------------------------------------------------------- notify hook


async def _post_hook(session: ClientSession, state: MJState, url: str, body: dict[str, Any]) -> None:
    with contextlib.suppress(Exception):
        async with session.post(url, data=_encode(body), headers={"Content-Type": "application/json"}) as r:
            await r.read()
    state.hook_posts.append((body["id"], body["status"], body["progress"]))


async def _hook_loop(state: MJState) -> None:
    """One loop for all hooked tasks: on each tick, POST every changed task (MJ-NZK NotifyServiceImpl)."""
    async with ClientSession(timeout=ClientTimeout(total=5)) as session:
        while True:
            await asyncio.sleep(min(max(state.step_s / 4, 0.01), 1.0))
            if not state.hooked:
                continue
            now = time.monotonic()
            posts = []
            for tid, last in list(state.hooked.items()):
                t = state.tasks.get(tid)
                if t is None or t.hook is None:
                    state.hooked.pop(tid, None)
                    continue
                body = state.task_json(t, None, now)
                key = f"{body['status']}:{body['progress']}"
                if key != last:
                    state.hooked[tid] = key
                    posts.append(_post_hook(session, state, t.hook, body))
                if body["status"] in TERMINAL:
                    state.hooked.pop(tid, None)
            if posts:
                await asyncio.gather(*posts)


async def _hooks_ctx(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_hook_loop(app[STATE_KEY]))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


# ---------------------------------------------------------------------------------------------- app


def build_app(state: MJState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware(state), mj_middleware(state)])
    app[STATE_KEY] = state
    app.cleanup_ctx.append(_hooks_ctx)
    r = app.router
    for p in MODE_PREFIXES:
        m = f"{p}/mj"
        r.add_post(f"{m}/submit/imagine", submit_imagine)
        r.add_post(f"{m}/submit/blend", submit_blend)
        r.add_post(f"{m}/submit/describe", submit_describe)
        r.add_post(f"{m}/submit/change", submit_change)
        r.add_post(f"{m}/submit/simple-change", submit_simple_change)
        r.add_post(f"{m}/submit/action", submit_action)
        r.add_get(f"{m}/task/{{tid}}/fetch", fetch)
        r.add_post(f"{m}/task/list-by-condition", list_by_condition)
        r.add_post(f"{m}/task/list-by-ids", list_by_condition)
        r.add_get(f"{m}/task/list", list_all)
        r.add_get(f"{m}/task/queue", list_all)
        r.add_post(f"{m}/task/{{tid}}/cancel", cancel)
    r.add_get(r"/mj/image/{tid:\d+}.png", image)
    r.add_get(r"/mj/image/{tid:\d+}/0_{i:[0-3]}{thumb:(?:_thumb)?}.png", image_part)
    r.add_get(r"/mj/preview/{tid:\d+}.png", preview)
    return app


def start(state: MJState | None = None, port: int = 0, **options: Any) -> FakeServer:
    """Start on 127.0.0.1 (free port by default) in a background thread; `options` are MJState knobs.

    The returned server's `.state` is the MJState.
    """
    st = state if state is not None else MJState(**options)
    return FakeServer(build_app(st), st, port=port).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fake midjourney-proxy")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--secret", default=None)
    ap.add_argument("--auth-header", default="mj-api-secret")
    ap.add_argument("--step-s", type=float, default=0.2)
    ap.add_argument("--progress-steps", default="10,37,68")
    ap.add_argument("--hang", action="store_true")
    ap.add_argument("--include-image-urls", action="store_true")
    ap.add_argument("--buttons", action="store_true", help="include plus/MJ-TAI buttons on SUCCESS")
    ap.add_argument("--public-url", default=None)
    ap.add_argument("--max-recorded", type=int, default=1000)
    a = ap.parse_args(argv)
    state = MJState(
        secret=a.secret,
        auth_header=a.auth_header,
        step_s=a.step_s,
        progress_steps=[int(x) for x in a.progress_steps.split(",") if x.strip()],
        hang=a.hang,
        include_image_urls=a.include_image_urls,
        include_buttons=a.buttons,
        public_url=a.public_url,
        max_recorded=a.max_recorded,
    )
    serve_forever(build_app(state), a.port)


if __name__ == "__main__":
    main()
