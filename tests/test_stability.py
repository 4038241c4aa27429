"""Stability AI through the Images API (official SDK, in-process gateway) against the fake Stable Image API."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_stability
from tests.upstreams.base import FakeServer, Fault
from tests.upstreams.fake_stability import StabilityState

KEY = "sk-stab-SECRET-5d1c0b9a8e7f6a5b"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
routes:
  - {name: sd-replace, provider: stability, upstream_model: stable-image-core, edit: search-and-replace}
  - {name: ultra-anime, provider: stability, upstream_model: stable-image-ultra, style_preset: anime}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    s = fake_stability.start(StabilityState(api_key=KEY))
    yield s
    s.stop()


@pytest.fixture
def up(server: FakeServer) -> StabilityState:
    assert isinstance(server.state, StabilityState)
    server.state.reset()
    return server.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, server: FakeServer, up: StabilityState) -> Iterator[InProcessGateway]:
    g = inprocess_gateway({"STABILITY_API_KEY": KEY, "STABILITY_BASE_URL": server.url}, CONFIG)
    yield g
    g.assert_secret_absent(KEY)


def form(up: StabilityState, i: int = 0) -> dict[str, str]:
    return {k: v[0] for k, v in up.requests[i].form.items()}


def png(b64: str | None) -> Image.Image:
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_core_gets_multipart_with_the_nearest_ratio_and_answers_b64(gw: InProcessGateway, up: StabilityState) -> None:
    raw = gw.openai().images.with_raw_response.generate(model="stable-image-core", prompt="a red fox",
                                                        size="1536x1024", extra_body={"negative_prompt": "blur"})
    res = raw.parse()
    (rec,) = up.requests
    assert rec.path == "/v2beta/stable-image/generate/core"
    assert rec.headers["authorization"] == f"Bearer {KEY}" and rec.headers["accept"] == "application/json"
    assert rec.headers["content-type"].startswith("multipart/form-data")
    assert form(up) == {"prompt": "a red fox", "output_format": "png", "aspect_ratio": "3:2",
                        "negative_prompt": "blur"}
    assert res.data and png(res.data[0].b64_json).size == (1280, 832)
    assert raw.headers["x-gateway-size"] == "1280x832" and res.size == "1280x832"


@pytest.mark.parametrize(("model", "path", "extra"), [
    ("sd3.5-large", "sd3", {"model": "sd3.5-large"}),
    ("sd3.5-large-turbo", "sd3", {"model": "sd3.5-large-turbo"}),
    ("sd3.5-medium", "sd3", {"model": "sd3.5-medium"}),
    ("stable-image-ultra", "ultra", {}),
    ("ultra-anime", "ultra", {"style_preset": "anime"}),
])
def test_each_route_reaches_its_endpoint(gw: InProcessGateway, up: StabilityState, model: str, path: str,
                                         extra: dict[str, str]) -> None:
    gw.openai().images.generate(model=model, prompt="a lighthouse", size="1024x1792", output_format="jpeg")
    (rec,) = up.requests
    assert rec.path == f"/v2beta/stable-image/generate/{path}"
    assert form(up) == {"prompt": "a lighthouse", "output_format": "jpeg", "aspect_ratio": "9:16", **extra}


def test_n_is_parallel_calls_with_consecutive_seeds_and_url_is_hosted(gw: InProcessGateway,
                                                                      up: StabilityState) -> None:
    res = gw.openai().images.generate(model="sd3.5-medium", prompt="two owls", n=3, response_format="url",
                                      extra_body={"seed": 41, "aspect_ratio": "21:9"})
    assert sorted(int(form(up, i)["seed"]) for i in range(3)) == [41, 42, 43]
    assert {form(up, i)["aspect_ratio"] for i in range(3)} == {"21:9"}
    assert res.data and len(res.data) == 3
    for item in res.data:
        assert item.url and item.url.startswith(gw.url + "/images/")
        r = gw.http.get(item.url)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "PNG"


def test_without_a_seed_each_of_n_gets_its_own(gw: InProcessGateway, up: StabilityState) -> None:
    gw.openai().images.generate(model="stable-image-core", prompt="owls", n=2)
    seeds = [form(up, i)["seed"] for i in range(2)]
    assert len(set(seeds)) == 2


def _png_bytes(size: tuple[int, int] = (96, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (0, 0, 255, 255)).save(buf, "PNG")
    return buf.getvalue()


def test_edit_with_a_mask_is_inpaint(gw: InProcessGateway, up: StabilityState) -> None:
    res = gw.openai().images.edit(model="stable-image-core", prompt="a red door", image=("in.png", _png_bytes()),
                                  mask=("mask.png", _png_bytes()), extra_body={"grow_mask": 8})
    (rec,) = up.requests
    assert rec.path == "/v2beta/stable-image/edit/inpaint"
    assert form(up) == {"prompt": "a red door", "output_format": "png", "grow_mask": "8"}
    assert rec.files["image"][0][2] == _png_bytes() and "mask" in rec.files
    assert res.data and png(res.data[0].b64_json).size == (96, 64)


def test_search_prompt_or_the_route_option_means_search_and_replace(gw: InProcessGateway,
                                                                     up: StabilityState) -> None:
    c = gw.openai()
    c.images.edit(model="stable-image-core", prompt="a cat", image=("in.png", _png_bytes()),
                  extra_body={"search_prompt": "dog"})
    assert up.requests[0].path == "/v2beta/stable-image/edit/search-and-replace"
    assert form(up)["search_prompt"] == "dog"
    with pytest.raises(openai.BadRequestError) as e:
        c.images.edit(model="sd-replace", prompt="a cat", image=("in.png", _png_bytes()))
    assert e.value.param == "search_prompt"
    assert len(up.requests) == 1  # refused before the upstream was called


def test_stream_gets_the_completed_image(gw: InProcessGateway, up: StabilityState) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "stable-image-core", "prompt": "a kite",
                                                      "stream": True})
    assert r.status_code == 200
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
    assert [e["type"] for e in events] == ["image_generation.completed"]
    assert png(events[0]["b64_json"]).size == (1024, 1024)


@pytest.mark.parametrize(("mode", "prompt", "status", "code"), [
    ("filtered", "a cat", 400, "content_policy_violation"),
    ("ok", "something forbidden", 400, "content_policy_violation"),
    ("credits", "a cat", 429, "insufficient_quota"),
    ("rate", "a cat", 429, "rate_limit_exceeded"),
    ("server", "a cat", 502, "internal_error"),
])
def test_upstream_failures_are_openai_errors(gw: InProcessGateway, up: StabilityState, mode: str, prompt: str,
                                             status: int, code: str) -> None:
    up.mode = mode
    r = gw.http.post("/v1/images/generations", json={"model": "stable-image-core", "prompt": prompt})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == code
    assert "Stability" in err["message"]
    if mode == "rate":
        assert r.headers["retry-after"] == "7"
    if mode == "credits":
        assert err["type"] == "insufficient_quota" and "credits" in err["message"]


def test_bad_key_bad_input_and_timeout(inprocess_gateway: InProcessFactory, server: FakeServer,
                                       up: StabilityState) -> None:
    gw = inprocess_gateway({"STABILITY_API_KEY": "sk-stab-WRONG-000000000000", "STABILITY_BASE_URL": server.url},
                           "router: {retries: 0}\nproviders: {stability: {timeout_s: 0.3}}\n")
    c = gw.openai()
    with pytest.raises(openai.AuthenticationError) as e1:
        c.images.generate(model="stable-image-core", prompt="x")
    assert e1.value.code == "invalid_api_key" and "invalid or missing header" in e1.value.message
    with pytest.raises(openai.BadRequestError) as e2:
        c.images.generate(model="stable-image-core", prompt="x", extra_body={"output_format": "gif"})
    with pytest.raises(openai.BadRequestError) as e3:
        c.images.generate(model="stable-image-core", prompt="x", extra_body={"seed": "many"})
    assert e3.value.param == "seed"
    up.api_key = None  # any key from here on
    up.fail_next(Fault(status=200, delay_s=2.0, passthrough=True))
    r = gw.http.post("/v1/images/generations", json={"model": "stable-image-core", "prompt": "slow"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    gw.remember(str(e1.value.body), str(e2.value.body), str(e3.value.body))
    gw.assert_secret_absent("sk-stab-WRONG-000000000000")
    up.api_key = KEY


def test_a_callers_own_key_is_used_and_never_echoed(gw: InProcessGateway, up: StabilityState) -> None:
    up.api_key = "sk-stab-CALLER-77777777777"
    res = gw.openai().images.generate(model="stable-image-core", prompt="mine",
                                      extra_headers={"X-Provider-Key": "sk-stab-CALLER-77777777777"})
    assert res.data and up.requests[0].headers["authorization"] == "Bearer sk-stab-CALLER-77777777777"
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent("sk-stab-CALLER-77777777777")
    up.api_key = KEY
