"""Volcengine Ark (Seedream / SeedEdit) through the Images API (official SDK, in-process gateway) against the
fake Ark."""

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
from tests.upstreams import fake_ark
from tests.upstreams.base import FakeServer, Fault
from tests.upstreams.fake_ark import ArkState

KEY = "ark-SECRET-1f2e3d4c5b6a79880011"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
routes:
  - {name: seedream-direct, provider: ark, upstream_model: doubao-seedream-4-0-250828, rehost: false}
  - {name: seedream-marked, provider: ark, upstream_model: doubao-seedream-4-0-250828, watermark: true}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    s = fake_ark.start(ArkState(api_key=KEY))
    yield s
    s.stop()


@pytest.fixture
def up(server: FakeServer) -> ArkState:
    assert isinstance(server.state, ArkState)
    server.state.reset()
    server.state.api_key = KEY
    return server.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, server: FakeServer, up: ArkState) -> Iterator[InProcessGateway]:
    g = inprocess_gateway({"ARK_API_KEY": KEY, "ARK_BASE_URL": server.url + "/api/v3"}, CONFIG)
    yield g
    g.assert_secret_absent(KEY)


def sent(up: ArkState) -> list[dict[str, Any]]:
    return [r.json for r in up.requests if r.path == "/api/v3/images/generations"]


def _png(color: tuple[int, int, int] = (0, 200, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buf, "PNG")
    return buf.getvalue()


def test_seedream_4_body_size_fit_and_rehosted_url(gw: InProcessGateway, up: ArkState) -> None:
    raw = gw.openai().images.with_raw_response.generate(model="seedream-4.0", prompt="a red fox",
                                                        size="1024x1536", extra_body={"seed": 7})
    res = raw.parse()
    (body,) = sent(up)
    assert body == {"model": "doubao-seedream-4-0-250828", "prompt": "a red fox", "response_format": "b64_json",
                    "size": "1024x1536", "seed": 7, "watermark": False, "sequential_image_generation": "disabled"}
    assert up.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert raw.headers["x-gateway-size"] == "1024x1536" and res.size == "1024x1536"
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/")  # Ark's own URL dies after 24 h
    img = Image.open(io.BytesIO(gw.http.get(url).content))
    assert img.size == (43, 64) and img.format == "JPEG"


@pytest.mark.parametrize(("model", "size", "extra", "expected"), [
    ("seedream-4.0", "512x512", {}, "960x960"),  # scaled up into 4.0's pixel range
    ("seedream-4.5", "1024x1024", {}, "1920x1920"),  # 4.5 starts at 2560x1440's area
    ("seedream-4.0", None, {}, "2K"),
    ("seedream-4.0", None, {"image_size": "4k"}, "4K"),
    ("seedream-4.0", "1536x1024", {"image_size": "1K"}, "1248x832"),
    ("seedream-4.0", "4096x100", {}, "3840x240"),  # the ratio is clamped to 16:1
    ("seedream-3.0", "3000x1500", {}, "2048x1024"),
    ("seedream-3.0", None, {}, "1024x1024"),
])
def test_sizes_fit_each_model(gw: InProcessGateway, up: ArkState, model: str, size: str | None,
                              extra: dict[str, Any], expected: str) -> None:
    kw: dict[str, Any] = {"size": size} if size else {}
    gw.openai().images.generate(model=model, prompt="p", extra_body=extra, **kw)
    assert sent(up)[0]["size"] == expected


def test_n_on_4x_is_one_set_and_on_3_0_parallel_calls(gw: InProcessGateway, up: ArkState) -> None:
    c = gw.openai()
    res = c.images.generate(model="seedream-4.0", prompt="three owls", n=3, response_format="b64_json")
    (body,) = sent(up)
    assert body["sequential_image_generation"] == "auto"
    assert body["sequential_image_generation_options"] == {"max_images": 3}
    assert res.data and len(res.data) == 3 and len({d.b64_json for d in res.data}) == 3
    assert Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json or ""))).format == "JPEG"
    assert res.usage is not None
    up.reset()
    res = c.images.generate(model="seedream-3.0", prompt="owls", n=2, extra_body={"guidance_scale": 2.5})
    bodies = sent(up)
    assert len(bodies) == 2 and all(b["guidance_scale"] == 2.5 for b in bodies)
    assert all("sequential_image_generation" not in b for b in bodies)
    assert res.data and len(res.data) == 2


def test_watermark_route_option_and_rehost_off(gw: InProcessGateway, up: ArkState, server: FakeServer) -> None:
    c = gw.openai()
    c.images.generate(model="seedream-marked", prompt="a")
    assert sent(up)[0]["watermark"] is True
    res = c.images.generate(model="seedream-direct", prompt="b", response_format="url")
    assert sent(up)[1]["response_format"] == "url"
    assert res.data and res.data[0].url and res.data[0].url.startswith(server.url + "/files/")


def test_seededit_edit_sends_one_data_url_and_adaptive_size(gw: InProcessGateway, up: ArkState) -> None:
    res = gw.openai().images.edit(model="seededit-3.0", prompt="make it blue", image=("in.png", _png()),
                                  response_format="b64_json", extra_body={"seed": 3})
    (body,) = sent(up)
    assert body["model"] == "doubao-seededit-3-0-i2i-250628" and body["size"] == "adaptive"
    assert body["image"] == "data:image/png;base64," + base64.b64encode(_png()).decode()
    assert res.data and res.data[0].b64_json


def test_seedream_4_edit_takes_several_references(gw: InProcessGateway, up: ArkState) -> None:
    gw.openai().images.edit(model="seedream-4.0", prompt="combine", image=[("a.png", _png()),
                                                                          ("b.png", _png((9, 9, 9)))])
    (body,) = sent(up)
    assert isinstance(body["image"], list) and len(body["image"]) == 2
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.edit(model="seedream-3.0", prompt="x", image=("a.png", _png()))
    assert e.value.param == "image"


@pytest.mark.parametrize("pretty", [False, True])
def test_stream_relays_each_image_as_it_is_made(gw: InProcessGateway, up: ArkState, pretty: bool) -> None:
    up.pretty_stream = pretty
    r = gw.http.post("/v1/images/generations", json={"model": "seedream-4.0", "prompt": "a kite", "n": 2,
                                                      "stream": True, "partial_images": 2})
    assert r.status_code == 200, r.text
    (body,) = sent(up)
    assert body["stream"] is True and body["response_format"] == "b64_json"
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
    kinds = [e["type"] for e in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"] * 2
    assert [e["partial_image_index"] for e in events[:2]] == [0, 1]
    assert events[2]["b64_json"] and events[2]["usage"]["generated_images"] == 2
    gw.remember(r.text)


def test_a_set_with_a_filtered_image_delivers_the_others(gw: InProcessGateway, up: ArkState) -> None:
    up.mode = "output_filtered"
    res = gw.openai().images.generate(model="seedream-4.0", prompt="three", n=3)
    assert res.data and len(res.data) == 2
    r = gw.http.post("/v1/images/generations", json={"model": "seedream-4.0", "prompt": "three", "n": 3,
                                                      "stream": True})
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
    assert [e["type"] for e in events] == ["image_generation.completed"] * 2


@pytest.mark.parametrize(("mode", "prompt", "status", "code"), [
    ("ok", "something forbidden", 400, "content_policy_violation"),
    ("overdue", "a cat", 429, "insufficient_quota"),
    ("rate", "a cat", 429, "rate_limit_exceeded"),
    ("server", "a cat", 502, "InternalServiceError"),
])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_are_openai_errors(gw: InProcessGateway, up: ArkState, mode: str, prompt: str,
                                             status: int, code: str, stream: bool) -> None:
    up.mode = mode
    r = gw.http.post("/v1/images/generations", json={"model": "seedream-4.0", "prompt": prompt, "stream": stream})
    if stream:  # the error comes as the stream's error event
        assert r.status_code in (200, status)
        text = r.text
        assert code in text and "Ark" in text
        return
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code and "Ark" in err["message"]
    if mode == "rate":
        assert r.headers["retry-after"] == "3"


def test_an_invalid_size_and_an_unknown_model_are_4xx(gw: InProcessGateway, up: ArkState) -> None:
    c = gw.openai()
    with pytest.raises(openai.BadRequestError) as e:
        c.images.generate(model="seedream-4.5", prompt="x", extra_body={"image_size": "8K"})
    assert e.value.param == "image_size" and not sent(up)
    with pytest.raises(openai.NotFoundError):
        c.images.generate(model="ark/doubao-seedream-9-9", prompt="x")


def test_bad_key_and_timeout(inprocess_gateway: InProcessFactory, server: FakeServer, up: ArkState) -> None:
    wrong = "ark-WRONG-00000000000000000000"
    gw = inprocess_gateway({"ARK_API_KEY": wrong, "ARK_BASE_URL": server.url + "/api/v3"},
                           "router: {retries: 0}\nproviders: {ark: {timeout_s: 0.3}}\n")
    with pytest.raises(openai.AuthenticationError) as e:
        gw.openai().images.generate(model="seedream-4.0", prompt="x")
    assert e.value.code == "invalid_api_key" and "missing or invalid" in e.value.message
    up.api_key = None
    up.fail_next(Fault(status=200, delay_s=2.0, passthrough=True))
    r = gw.http.post("/v1/images/generations", json={"model": "seedream-4.0", "prompt": "slow"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    gw.remember(str(e.value.body))
    gw.assert_secret_absent(wrong)


@pytest.mark.parametrize("pretty", [False, True])
def test_the_sse_parser_takes_events_split_anywhere(pretty: bool) -> None:
    from image_gateway.providers.ark_wire import SSE

    events: list[dict[str, Any]] = [{"type": "image_generation.partial_succeeded", "image_index": 0, "url": "http://x/a.jpeg"},
              {"type": "image_generation.completed", "usage": {"generated_images": 1}}]
    wire = b"".join(fake_ark._sse(str(e["type"]), e, pretty) for e in events) + b"data: [DONE]\n\n"
    for step in (1, 7, len(wire)):
        parser = SSE()
        got = [ev for i in range(0, len(wire), step) for ev in parser.feed(wire[i:i + step])]
        got += list(parser.close())
        assert got == events, step
