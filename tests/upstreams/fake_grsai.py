"""Fake GrsAi (protocols.md §3): `/v1/draw/nano-banana`, `/v1/draw/completions`, `/v1/draw/result`.

Response modes (by the submit's `webHook`):
* absent/empty -> **stream**: HTTP 200 `text/event-stream`, one `data: {snapshot}\\n\\n` per progress change,
  `step_s` apart, the last one `succeeded`/`failed` (with `shutProgress: true` only the last one);
* `"-1"` -> **poll**: ack `{"code":0,"msg":"success","data":{"id":..}}`, then `POST /v1/draw/result {"id"}`
  answers `{"code":0,"msg":"success","data":{snapshot}}`; unknown id -> `{"code":-22,"msg":"task not found"}`;
* a URL -> **webhook**: the same ack, then every snapshot change is POSTed (JSON) to that URL.

Task progress is derived on read from the time elapsed since submit: snapshot k (k = elapsed // step_s)
is `running` with `progress_steps[k]` (default 0, 25, 50, 75) and then `succeeded` with progress 100 and
`results[i].url` = `<base>/files/<id>.png` (more than one result: `<id>-<i>.png`). Images are real PNGs
of one solid colour `prompt_color(prompt, i)`, at most 128 px, shaped by `aspectRatio`/`size`
(`image_size(ratio)`).

Failures: prompt containing `moderation_word` -> `failed`/`input_moderation` right after the first
snapshot; prompt containing one of `output_moderation_prompts` -> `output_moderation` at the end; one of
`error_prompts` -> `error` at the end. HTTP status and message texts for errors are not documented
(protocols.md §6); the ones here are plausible guesses.

Run by hand: `python -m tests.upstreams.fake_grsai --port 8081 [--api-key sk-...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache, partial
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web
from PIL import Image

from .base import FakeServer, FakeState, Handler, Recorded, recording_middleware, serve_forever

MAX_SIDE = 128
NANO_MODELS = frozenset(
    {
        "nano-banana-fast",
        "nano-banana",
        "nano-banana-pro",
        "nano-banana-pro-vt",
        "nano-banana-pro-cl",
        "nano-banana-pro-vip",
        "nano-banana-pro-4k-vip",
        "nano-banana-2",
    }
)
COMPLETION_MODELS = frozenset({"sora-image", "gpt-4o-image", "gpt-image-1.5", "gpt-image-2", "gpt-image-2-vip"})
FAIL_TEXT = {
    "input_moderation": "The input content was flagged by moderation",
    "output_moderation": "The generated image was flagged by moderation",
    "error": "Invalid input parameters",
}

Color = tuple[int, int, int]
_dumps = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------- images


def prompt_color(prompt: str, i: int = 0) -> Color:
    """Colour of result `i` of a task with this prompt (pure function)."""
    d = hashlib.sha256(f"{prompt}#{i}".encode()).digest()
    return (32 + d[0] % 192, 32 + d[1] % 192, 32 + d[2] % 192)


def image_size(ratio: str | None) -> tuple[int, int]:
    """Pixel size of a result: the ratio ("16:9" or "1536x1024") scaled so the long side is 128."""
    m = re.fullmatch(r"\s*(\d+)\s*[:xX*]\s*(\d+)\s*", ratio or "")
    if not m or not int(m.group(1)) or not int(m.group(2)):
        return MAX_SIDE, MAX_SIDE
    w, h = int(m.group(1)), int(m.group(2))
    scale = MAX_SIDE / max(w, h)
    return max(1, round(w * scale)), max(1, round(h * scale))


@lru_cache(maxsize=512)
def solid_png(color: Color, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- state


class GrsTask:
    __slots__ = ("fail", "id", "model", "n", "not_found_left", "prompt", "ratio", "step", "t0")

    def __init__(self, model: str, prompt: str, ratio: str | None, n: int, step: float) -> None:
        self.id = str(uuid.uuid4())
        self.model = model
        self.prompt = prompt
        self.ratio = ratio
        self.n = n
        self.step = step
        self.t0 = time.monotonic()
        self.fail = ""  # "", "input_moderation", "output_moderation", "error", "hang"
        self.not_found_left = 0


class GrsAiState(FakeState):
    """Knobs (constructor or attributes, changeable from the test thread):

    api_key                   required Bearer key when set; None = any non-empty Bearer key. Bad -> 401
    step_s                    seconds between snapshots (default 0.1)
    progress_steps            `running` progress values before the final snapshot (default 0, 25, 50, 75)
    no_space_after_data       stream lines `data:{...}` instead of `data: {...}`
    no_newlines               stream snapshots concatenated with no separator at all
    break_stream_after        abort the stream connection after k snapshots (task keeps running); None = off
    break_stream_clean        with break_stream_after: end the HTTP body cleanly instead of aborting
    not_found_first_polls     answer -22 to the first k polls of each new task
    moderation_word           prompt word -> failed/input_moderation (default "nsfw")
    output_moderation_prompts prompt substrings -> failed/output_moderation
    error_prompts             prompt substrings -> failed/error
    hang                      tasks submitted while True stay `running` forever
    strict_models             unknown `model` -> {"code":-1,"msg":"model not supported"}
    public_url                base for result URLs (default: http://<Host header>)
    Counters: submits, polls, hook_posts [(task id, status, progress)].
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        step_s: float = 0.1,
        progress_steps: Iterable[int] = (0, 25, 50, 75),
        moderation_word: str = "nsfw",
        output_moderation_prompts: Iterable[str] = (),
        error_prompts: Iterable[str] = (),
        not_found_first_polls: int = 0,
        no_space_after_data: bool = False,
        no_newlines: bool = False,
        break_stream_after: int | None = None,
        break_stream_clean: bool = False,
        hang: bool = False,
        strict_models: bool = True,
        public_url: str | None = None,
    ) -> None:
        super().__init__()
        self.api_key = api_key
        self.step_s = step_s
        self.progress_steps = list(progress_steps) or [0]
        self.moderation_word = moderation_word
        self.output_moderation_prompts = list(output_moderation_prompts)
        self.error_prompts = list(error_prompts)
        self.not_found_first_polls = not_found_first_polls
        self.no_space_after_data = no_space_after_data
        self.no_newlines = no_newlines
        self.break_stream_after = break_stream_after
        self.break_stream_clean = break_stream_clean
        self.hang = hang
        self.strict_models = strict_models
        self.public_url = public_url
        self.submits = 0
        self.polls = 0
        self.tasks: dict[str, GrsTask] = {}
        self.hook_posts: list[tuple[str, str, int]] = []
        self.seen_base = "http://127.0.0.1"
        self._knobs = {k: getattr(self, k) for k in (
            "api_key", "step_s", "progress_steps", "moderation_word", "output_moderation_prompts", "error_prompts",
            "not_found_first_polls", "no_space_after_data", "no_newlines", "break_stream_after",
            "break_stream_clean", "hang", "strict_models", "public_url")}

    def reset(self) -> None:
        """Knobs back to their constructor values; recorded requests, tasks and counters cleared."""
        self.clear()
        for k, v in self._knobs.items():
            setattr(self, k, list(v) if isinstance(v, list) else v)
        self.submits = self.polls = 0
        self.tasks.clear()
        self.hook_posts.clear()

    def snapshot(self, t: GrsTask, base: str | None = None, now: float | None = None) -> dict[str, Any]:
        """The task snapshot (§3.6) at monotonic time `now`."""
        now = time.monotonic() if now is None else now
        k = int((now - t.t0) / t.step)
        steps = self.progress_steps
        snap: dict[str, Any] = {
            "id": t.id,
            "results": [],
            "progress": steps[min(k, len(steps) - 1)],
            "status": "running",
            "failure_reason": "",
            "error": "",
        }
        if t.fail == "hang" or (k < len(steps) and not (t.fail == "input_moderation" and k >= 1)):
            return snap
        snap["status"] = "failed" if t.fail else "succeeded"
        if t.fail:
            snap["failure_reason"] = t.fail
            snap["error"] = FAIL_TEXT[t.fail]
            return snap
        base = base or self.public_url or self.seen_base
        names = [t.id] if t.n == 1 else [f"{t.id}-{i}" for i in range(t.n)]
        snap["progress"] = 100
        snap["results"] = [{"url": f"{base}/files/{name}.png", "content": ""} for name in names]
        return snap

    def next_change_in(self, t: GrsTask, now: float) -> float:
        k = int((now - t.t0) / t.step)
        return max(0.0, t.t0 + (k + 1) * t.step - now)


STATE_KEY = web.AppKey("grsai_state", GrsAiState)


def _state(request: web.Request) -> GrsAiState:
    return request.app[STATE_KEY]


def _body(request: web.Request) -> dict[str, Any]:
    rec: Recorded = request["rec"]
    return rec.json if isinstance(rec.json, dict) else {}


def _envelope(code: int, msg: str, data: Any = None, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"code": code, "msg": msg}
    if data is not None:
        body["data"] = data
    return web.json_response(body, status=status, dumps=_dumps)


def grsai_middleware(state: GrsAiState) -> Any:
    @web.middleware
    async def mw(request: web.Request, handler: Handler) -> web.StreamResponse:
        state.seen_base = f"http://{request.host}"
        if request.path.startswith("/v1/"):
            auth = request.headers.get("Authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            if not key or (state.api_key is not None and key != state.api_key):
                return _envelope(-1, "apikey error", status=401)
        return await handler(request)

    return mw


# ---------------------------------------------------------------------------------------------- submit


def _abort(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()
    raise asyncio.CancelledError


async def _submit(request: web.Request, models: frozenset[str]) -> web.StreamResponse:
    state = _state(request)
    state.submits += 1
    body = _body(request)
    model, prompt = body.get("model"), body.get("prompt")
    if not isinstance(model, str) or not model:
        return _envelope(-1, "model is required")
    if state.strict_models and model not in models:
        return _envelope(-1, "model not supported")
    if not isinstance(prompt, str) or not prompt.strip():
        return _envelope(-1, "prompt is required")
    urls = body.get("urls", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        return _envelope(-1, "urls must be an array of strings")
    ratio = body.get("aspectRatio") or body.get("size")
    n_raw = body.get("variants", body.get("n", 1))
    n = min(4, max(1, n_raw)) if isinstance(n_raw, int) and models is COMPLETION_MODELS else 1
    t = GrsTask(model, prompt, ratio if isinstance(ratio, str) else None, n, state.step_s)
    low = prompt.lower()
    if state.moderation_word and state.moderation_word.lower() in low:
        t.fail = "input_moderation"
    elif any(s and s in prompt for s in state.output_moderation_prompts):
        t.fail = "output_moderation"
    elif any(s and s in prompt for s in state.error_prompts):
        t.fail = "error"
    elif state.hang:
        t.fail = "hang"
    t.not_found_left = state.not_found_first_polls
    state.tasks[t.id] = t

    hook = body.get("webHook")
    if hook:
        if hook != "-1":
            request.app[HOOKS_KEY].start(t, str(hook))
        return _envelope(0, "success", {"id": t.id})
    return await _stream(request, state, t, bool(body.get("shutProgress")))


async def _stream(request: web.Request, state: GrsAiState, t: GrsTask, shut_progress: bool) -> web.StreamResponse:
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    prefix = "data:" if state.no_space_after_data else "data: "
    sep = "" if state.no_newlines else "\n\n"
    base = state.public_url or f"http://{request.host}"
    sent, last, step = 0, None, 0
    while True:
        if state.break_stream_after is not None and sent >= state.break_stream_after:
            if state.break_stream_clean:
                await resp.write_eof()
                return resp
            _abort(request)
        now = time.monotonic()
        if t.t0 + step * t.step > now:  # step `step` has not been reached yet
            await asyncio.sleep(t.t0 + step * t.step - now + 0.001)
            continue
        # The state at step `step` (not "now"): a late wake-up under load must not skip a progress value.
        snap = state.snapshot(t, base, t.t0 + (step + 0.5) * t.step)
        step += 1
        done = snap["status"] != "running"
        key = (snap["status"], snap["progress"])
        if key != last and (done or not shut_progress):
            await resp.write(f"{prefix}{_dumps(snap)}{sep}".encode())
            sent += 1
            last = key
        if done:
            break
    await resp.write_eof()
    return resp


async def nano_banana(request: web.Request) -> web.StreamResponse:
    return await _submit(request, NANO_MODELS)


async def completions(request: web.Request) -> web.StreamResponse:
    return await _submit(request, COMPLETION_MODELS)


async def result(request: web.Request) -> web.Response:
    state = _state(request)
    state.polls += 1
    tid = _body(request).get("id")
    t = state.tasks.get(tid) if isinstance(tid, str) else None
    if t is None:
        return _envelope(-22, "task not found")
    if t.not_found_left > 0:
        t.not_found_left -= 1
        return _envelope(-22, "task not found")
    return _envelope(0, "success", state.snapshot(t, state.public_url or f"http://{request.host}"))


async def files(request: web.Request) -> web.Response:
    state = _state(request)
    t = state.tasks.get(request.match_info["tid"])
    suffix = request.match_info["i"]
    idx = int(suffix[1:]) if suffix else 0
    if t is None or (t.n > 1) != bool(suffix) or idx >= t.n:
        raise web.HTTPNotFound()
    return web.Response(body=solid_png(prompt_color(t.prompt, idx), image_size(t.ratio)), content_type="image/png")


# ---------------------------------------------------------------------------------------------- webhook mode


class _Hooks:
    """Webhook-mode deliveries: one coroutine per hooked task (only tasks submitted with a webHook URL)."""

    def __init__(self, state: GrsAiState) -> None:
        self.state = state
        self.session: ClientSession | None = None
        self.running: set[asyncio.Task[None]] = set()

    def start(self, t: GrsTask, url: str) -> None:
        task = asyncio.create_task(self._run(t, url))
        self.running.add(task)
        task.add_done_callback(self.running.discard)

    async def _run(self, t: GrsTask, url: str) -> None:
        state, last, step = self.state, None, 0
        while self.session is not None:
            now = time.monotonic()
            if t.t0 + step * t.step > now:
                await asyncio.sleep(t.t0 + step * t.step - now + 0.001)
                continue
            snap = state.snapshot(t, None, t.t0 + (step + 0.5) * t.step)  # every step, even after a late wake-up
            step += 1
            key = (snap["status"], snap["progress"])
            if key != last:
                last = key
                with contextlib.suppress(Exception):
                    async with self.session.post(url, json=snap) as r:
                        await r.read()
                state.hook_posts.append((t.id, snap["status"], snap["progress"]))
            if snap["status"] != "running":
                return


HOOKS_KEY = web.AppKey("grsai_hooks", _Hooks)


async def _hooks_ctx(app: web.Application) -> AsyncIterator[None]:
    hooks = app[HOOKS_KEY]
    hooks.session = ClientSession(timeout=ClientTimeout(total=5))
    yield
    session, hooks.session = hooks.session, None
    for task in list(hooks.running):
        task.cancel()
    await asyncio.gather(*hooks.running, return_exceptions=True)
    await session.close()


# ---------------------------------------------------------------------------------------------- app


def build_app(state: GrsAiState) -> web.Application:
    app = web.Application(middlewares=[recording_middleware(state), grsai_middleware(state)])
    app[STATE_KEY] = state
    app[HOOKS_KEY] = _Hooks(state)
    app.cleanup_ctx.append(_hooks_ctx)
    app.router.add_post("/v1/draw/nano-banana", nano_banana)
    app.router.add_post("/v1/draw/completions", completions)
    app.router.add_post("/v1/draw/result", result)
    app.router.add_get(r"/files/{tid:[0-9a-f-]{36}}{i:(?:-[0-3])?}.png", files)
    return app


def start(state: GrsAiState | None = None, port: int = 0, **options: Any) -> FakeServer:
    """Start on 127.0.0.1 (free port by default) in a background thread; `options` are GrsAiState knobs.

    The returned server's `.state` is the GrsAiState.
    """
    st = state if state is not None else GrsAiState(**options)
    return FakeServer(build_app(st), st, port=port).start()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fake GrsAi")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--step-s", type=float, default=0.1)
    ap.add_argument("--public-url", default=None)
    a = ap.parse_args(argv)
    state = GrsAiState(api_key=a.api_key, step_s=a.step_s, public_url=a.public_url)
    serve_forever(build_app(state), a.port)


if __name__ == "__main__":
    main()
