"""Alibaba DashScope (Qwen-Image, Wan) through the Images API (official SDK, in-process gateway) against the
fake DashScope: the synchronous protocol, the asynchronous task polled by the engine, tasks and cancel."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_dashscope
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_dashscope import ASYNC, SYNC, DashScopeState
from tests.upstreams.pictures import digest_color
from tests.waits import wait_until

KEY = "sk-dash-SECRET-0a9b8c7d6e5f4a3b2c1d"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
providers:
  dashscope: {poll_interval_s: 0.03}
routes:
  - {name: qwen-direct, provider: dashscope, upstream_model: qwen-image, rehost: false, prompt_extend: false}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    s = fake_dashscope.start(DashScopeState(api_key=KEY))
    yield s
    s.stop()


@pytest.fixture
def up(server: FakeServer) -> DashScopeState:
    assert isinstance(server.state, DashScopeState)
    server.state.reset()
    server.state.api_key = KEY
    return server.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, server: FakeServer, up: DashScopeState) -> Iterator[InProcessGateway]:
    g = inprocess_gateway({"DASHSCOPE_API_KEY": KEY, "DASHSCOPE_BASE_URL": server.url}, CONFIG)
    yield g
    g.assert_secret_absent(KEY)


def sent(up: DashScopeState, path: str) -> list[dict[str, Any]]:
    return [r.json for r in up.requests if r.path == path]


def image(raw: bytes) -> Image.Image:
    return Image.open(io.BytesIO(raw))


def test_qwen_image_is_one_synchronous_call_with_the_nearest_size(gw: InProcessGateway, up: DashScopeState) -> None:
    raw = gw.openai().images.with_raw_response.generate(
        model="qwen-image", prompt="a poster that says hello", size="1536x1024",
        extra_body={"negative_prompt": "blurry", "seed": 5})
    res = raw.parse()
    (body,) = sent(up, SYNC)
    assert body == {"model": "qwen-image",
                    "input": {"messages": [{"role": "user", "content": [{"text": "a poster that says hello"}]}]},
                    "parameters": {"size": "1472*1140", "negative_prompt": "blurry", "watermark": False, "seed": 5}}
    assert up.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert "x-dashscope-async" not in up.requests[0].headers
    assert raw.headers["x-gateway-size"] == "1472x1140" and res.size == "1472x1140"
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/")  # DashScope's URL dies after 24 h
    assert image(gw.http.get(url).content).size == (64, 50)


def test_qwen_n_is_parallel_calls_and_route_options_apply(gw: InProcessGateway, up: DashScopeState,
                                                           server: FakeServer) -> None:
    res = gw.openai().images.generate(model="qwen-direct", prompt="two cats", n=2)
    bodies = sent(up, SYNC)
    assert len(bodies) == 2 and all(b["parameters"]["prompt_extend"] is False for b in bodies)
    assert all("n" not in b["parameters"] for b in bodies)
    assert res.data and len(res.data) == 2
    assert all(d.url and d.url.startswith(server.url + "/files/") for d in res.data)  # rehost: false


def test_qwen_image_edit_puts_the_image_in_the_message(gw: InProcessGateway, up: DashScopeState) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (1, 2, 3)).save(buf, "PNG")
    res = gw.openai().images.edit(model="qwen-image-edit", prompt="make it night", image=("in.png", buf.getvalue()),
                                  response_format="b64_json")
    (body,) = sent(up, SYNC)
    content = body["input"]["messages"][0]["content"]
    assert content == [{"image": "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()},
                       {"text": "make it night"}]
    assert "size" not in body["parameters"]  # the edit keeps the input's shape
    assert res.data and image(base64.b64decode(res.data[0].b64_json or "")).format == "PNG"
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.edit(model="qwen-image", prompt="x", image=("in.png", buf.getvalue()))
    assert e.value.param == "image"


def test_wan_is_a_task_the_engine_polls(gw: InProcessGateway, up: DashScopeState) -> None:
    up.pending_polls, up.running_polls = 2, 2
    res = gw.openai().images.generate(model="wan2.2-t2i-flash", prompt="a castle", n=2, size="1536x1024",
                                      response_format="b64_json", extra_body={"negative_prompt": "fog"})
    (body,) = sent(up, ASYNC)
    assert body == {"model": "wan2.2-t2i-flash", "input": {"prompt": "a castle", "negative_prompt": "fog"},
                    "parameters": {"size": "1440*960", "n": 2, "watermark": False}}
    assert up.requests[0].headers["x-dashscope-async"] == "enable"
    assert up.count("/api/v1/tasks/") == 5  # 2 PENDING, 2 RUNNING, then SUCCEEDED
    assert res.data and len(res.data) == 2 and res.size == "1440x960"
    assert [image(base64.b64decode(d.b64_json or "")).getpixel((0, 0)) for d in res.data] == \
        [digest_color("a castle", i) for i in range(2)]


def test_wan_stream_reports_progress_then_the_images(gw: InProcessGateway, up: DashScopeState) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "wanx2.1-t2i-turbo", "prompt": "a kite", "n": 1,
                                                      "stream": True})
    assert r.status_code == 200, r.text
    assert ": progress 0%" in r.text
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
    assert [e["type"] for e in events] == ["image_generation.completed"]


def test_wan_async_task_and_cancel(gw: InProcessGateway, up: DashScopeState) -> None:
    c = gw.openai()
    raw = c.images.with_raw_response.generate(model="wan2.2-t2i-plus", prompt="a lake", n=1,
                                              extra_headers={"Prefer": "respond-async"})
    assert raw.status_code == 202
    task = raw.http_response.json()

    def finished() -> Any:
        t: Any = c.get(f"/images/tasks/{task['id']}", cast_to=object)
        return t if t["status"] in ("succeeded", "failed", "cancelled") else None

    t = wait_until(finished, timeout=15, interval=0.03, what="the task to finish")
    assert t["status"] == "succeeded" and t["result"]["data"], t
    gw.remember(json.dumps(t))
    up.pending_polls = 10_000  # the next task stays PENDING upstream
    task = gw.http.post("/v1/images/generations", json={"model": "wan2.2-t2i-plus", "prompt": "forever"},
                        headers={"Prefer": "respond-async"}).json()
    wait_until(lambda: up.count("/api/v1/tasks/") >= 4, what="the second task to be polled")
    r = gw.http.delete(f"/v1/images/tasks/{task['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    wait_until(lambda: any(t["status"] == "CANCELED" for t in up.tasks.values()), what="the upstream cancel")
    assert up.count("/cancel") == 1


@pytest.mark.parametrize(("mode", "model", "prompt", "status", "code"), [
    ("ok", "qwen-image", "something forbidden", 400, "content_policy_violation"),
    ("ok", "wan2.2-t2i-flash", "something forbidden", 400, "content_policy_violation"),
    ("arrearage", "qwen-image", "a cat", 429, "insufficient_quota"),
    ("throttle", "wan2.2-t2i-flash", "a cat", 429, "rate_limit_exceeded"),
    ("server", "qwen-image", "a cat", 502, "InternalError"),
    ("ok", "wan2.2-t2i-flash", "a doomed cat", 502, "InternalError.Algo"),  # the task FAILED
])
def test_upstream_failures_are_openai_errors(gw: InProcessGateway, up: DashScopeState, mode: str, model: str,
                                             prompt: str, status: int, code: str) -> None:
    up.mode = mode
    up.pending_polls = up.running_polls = 0
    r = gw.http.post("/v1/images/generations", json={"model": model, "prompt": prompt})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    assert "DashScope" in err["message"]


def test_a_bad_key_is_401(inprocess_gateway: InProcessFactory, server: FakeServer,
                                 up: DashScopeState) -> None:
    wrong = "sk-dash-WRONG-0000000000000000"
    gw = inprocess_gateway({"DASHSCOPE_API_KEY": wrong, "DASHSCOPE_BASE_URL": server.url},
                           "router: {retries: 0}\n")
    with pytest.raises(openai.AuthenticationError) as e:
        gw.openai().images.generate(model="qwen-image", prompt="x")
    assert e.value.code == "invalid_api_key" and "Invalid API-key" in e.value.message
    gw.remember(str(e.value.body))
    gw.assert_secret_absent(wrong)


def test_unknown_task_state_is_an_upstream_error(gw: InProcessGateway, up: DashScopeState) -> None:
    up.pending_polls = 10_000
    task = gw.http.post("/v1/images/generations", json={"model": "wan2.2-t2i-flash", "prompt": "gone"},
                        headers={"Prefer": "respond-async"}).json()
    wait_until(lambda: up.tasks, what="the upstream task")
    up.tasks.clear()  # DashScope forgets tasks after 24 h: UNKNOWN

    def failed() -> dict[str, Any] | None:
        t: dict[str, Any] = gw.http.get(f"/v1/images/tasks/{task['id']}").json()
        return t if t["status"] == "failed" else None

    t = wait_until(failed, timeout=10, what="the task to fail")
    assert t is not None and t["error"]["code"] == "upstream_task_lost"
