"""梦羽 Z-Image (sd.exacg.cc) through the Images API with the official SDK, against the fake on 127.0.0.1."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.upstreams import fake_sd
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_sd import SDState

SD_KEY = "sk-sd-SECRET-7c1e5a9d3b2f"


SHARED_CONFIG = "router: {retries: 0, cooldown_failures: 1000}\n"


@pytest.fixture(scope="module")
def sd_server() -> Iterator[FakeServer]:
    server = fake_sd.start(SDState(api_key=SD_KEY))
    yield server
    server.stop()


@pytest.fixture
def sd(sd_server: FakeServer) -> FakeServer:
    st = sd_state(sd_server)
    st.reset()
    st.api_key = SD_KEY
    return sd_server


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, sd_server: FakeServer) -> Iterator[GatewayProcess]:
    """One gateway for the tests that need no config of their own (a gateway start costs ~1 s)."""
    gw = GatewayProcess(tmp_path_factory.mktemp("zimage"), {"SD_API_KEY": SD_KEY, "SD_BASE_URL": sd_server.url},
                        SHARED_CONFIG).start()
    yield gw
    gw.kill()


@pytest.fixture
def gw(shared: GatewayProcess, sd: FakeServer) -> GatewayProcess:
    return shared


def sd_state(sd: FakeServer) -> SDState:
    assert isinstance(sd.state, SDState)
    return sd.state


def start(gateway: GatewayFactory, sd: FakeServer, config_yaml: str | None = None, **env: str) -> GatewayProcess:
    return gateway(env={"SD_API_KEY": SD_KEY, "SD_BASE_URL": sd.url, **env}, config_yaml=config_yaml)


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="caller-token", max_retries=0)


def bodies(sd: FakeServer) -> list[dict[str, Any]]:
    return [r.json for r in sd_state(sd).requests if r.path == fake_sd.GENERATE_PATH]


def test_sdk_generate_sends_the_seed_body_and_returns_a_hosted_copy(gw: GatewayProcess, sd: FakeServer) -> None:
    res = client(gw).images.generate(
        model="Z-Image", prompt="a red fox in snow", size="1536x1024",
        extra_body={"seed": 42, "cfg": 4.5, "steps": 12, "negative_prompt": "blurry"})
    # The upstream's URL is downloaded once and hosted: the answer's URL is the gateway's own.
    assert res.data and res.data[0].url and res.data[0].url.startswith(gw.url + "/images/")
    assert res.data[0].b64_json and base64.b64decode(res.data[0].b64_json) == httpx.get(res.data[0].url).content
    assert res.size == "1536x1024"
    (body,) = bodies(sd)
    assert body == {"prompt": "a red fox in snow", "width": 1536, "height": 1024, "steps": 12, "cfg": 4.5,
                    "model_index": 5, "seed": 42, "negative_prompt": "blurry"}
    rec = sd_state(sd).requests[0]
    assert rec.headers["authorization"] == f"Bearer {SD_KEY}"
    png = httpx.get(res.data[0].url).content
    assert Image.open(io.BytesIO(png)).size == (64, 43)  # the fake keeps the requested aspect
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent(SD_KEY)


def test_defaults_alias_and_random_seed(gw: GatewayProcess, sd: FakeServer) -> None:
    c = client(gw)
    for _ in range(2):
        c.images.generate(model="z-image", prompt="a lighthouse")
    first, second = bodies(sd)
    for body in (first, second):
        assert (body["width"], body["height"], body["steps"], body["cfg"], body["model_index"]) == (
            2048, 2048, 8, 7.0, 5)
        assert "negative_prompt" not in body
        assert isinstance(body["seed"], int) and 0 <= body["seed"] < 2**31 - 1
    assert first["seed"] != second["seed"]
    gw.assert_secret_absent(SD_KEY)


@pytest.mark.parametrize(
    ("extra", "size", "expected"),
    [
        ({"width": 1000, "height": 3000}, None, (1000, 2048)),
        ({"width": 30, "height": 2050}, None, (64, 2048)),
        ({"width": 1001, "height": 517}, "1024x1024", (1000, 520)),  # extras win over size; multiples of 8
        ({"width": "768"}, "1024x1536", (768, 1536)),  # one side given: the other from size
        ({}, "4096x100", (2048, 104)),
    ],
)
def test_sizes_are_snapped_and_clamped(gw: GatewayProcess, sd: FakeServer, extra: dict[str, Any],
                                       size: str | None, expected: tuple[int, int]) -> None:
    kwargs: dict[str, Any] = {"size": size} if size else {}
    client(gw).images.generate(model="Z-Image", prompt="p", extra_body=extra, **kwargs)
    (body,) = bodies(sd)
    assert (body["width"], body["height"]) == expected


def test_b64_json_and_n_are_parallel_calls_with_consecutive_seeds(gw: GatewayProcess, sd: FakeServer) -> None:
    res = client(gw).images.generate(model="Z-Image", prompt="two owls", n=2, size="512x1024",
                                     response_format="b64_json", extra_body={"seed": 7})
    assert res.data and len(res.data) == 2
    for item in res.data:
        assert item.b64_json
        img = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
        assert img.format == "PNG" and img.size == (32, 64)
    assert sorted(b["seed"] for b in bodies(sd)) == [7, 8]
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent(SD_KEY)


def test_model_index_and_defaults_per_route(gateway: GatewayFactory, sd: FakeServer) -> None:
    yaml = """
routes:
  - name: Z-Image
    model_index: 4
    rehost: false
  - name: zimage-anime
    provider: zimage
    upstream_model: anime
    options: {model_index: 11, steps: 20, cfg: 5, negative_prompt: "lowres", rehost: true}
"""
    gw = start(gateway, sd, config_yaml=yaml)
    c = client(gw)
    plain = c.images.generate(model="Z-Image", prompt="a")
    hosted = c.images.generate(model="zimage-anime", prompt="b")
    assert plain.data and plain.data[0].url and plain.data[0].url.startswith(sd.url)
    assert hosted.data and hosted.data[0].url and hosted.data[0].url.startswith(gw.url + "/images/")
    c.images.generate(model="zimage-anime", prompt="c", extra_body={"negative_prompt": "text", "steps": 10})
    a, b, c_ = bodies(sd)
    assert a["model_index"] == 4 and a["steps"] == 8
    assert (b["model_index"], b["steps"], b["cfg"], b["negative_prompt"]) == (11, 20, 5.0, "lowres")
    assert (c_["steps"], c_["negative_prompt"]) == (10, "text")


@pytest.mark.parametrize(
    ("mode", "status", "words"),
    [
        ("fail", 502, ["Z-Image upstream error", "积分不足"]),
        ("fail_message", 502, ["Z-Image upstream error", "服务器内部错误"]),
        ("challenge", 502, ["refused", "HTTP 403"]),
        ("no_url", 502, ["no image URL"]),
    ],
)
def test_upstream_failures_are_clear(gw: GatewayProcess, sd: FakeServer, mode: str, status: int,
                                     words: list[str]) -> None:
    sd_state(sd).mode = mode
    r = httpx.post(gw.base_url + "/images/generations", json={"model": "Z-Image", "prompt": "a cat"}, timeout=30)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    for w in words:
        assert w in err["message"]
    assert "undefined" not in r.text and "<html" not in r.text.lower()
    assert set(err) == {"message", "type", "param", "code"}
    gw.remember(r.text)
    gw.assert_secret_absent(SD_KEY)


def test_sdk_raises_typed_errors(gw: GatewayProcess, sd: FakeServer) -> None:
    c = client(gw)
    sd_state(sd).mode = "fail"
    with pytest.raises(openai.InternalServerError) as e1:
        c.images.generate(model="Z-Image", prompt="x")
    assert e1.value.status_code == 502 and "积分不足" in e1.value.message
    sd_state(sd).mode = "ok"
    sd_state(sd).api_key = "sk-sd-other-key-000000"
    with pytest.raises(openai.AuthenticationError) as e2:
        c.images.generate(model="Z-Image", prompt="x")
    assert e2.value.code == "invalid_api_key" and "API密钥无效" in e2.value.message
    with pytest.raises(openai.BadRequestError) as e3:
        c.images.generate(model="Z-Image", prompt="x", extra_body={"steps": "many"})
    assert e3.value.param == "steps"
    with pytest.raises(openai.BadRequestError) as e4:
        c.images.generate(model="Z-Image", prompt="x", extra_body={"cfg": "high"})
    assert e4.value.param == "cfg"
    gw.remember(str(e1.value.body), str(e2.value.body), str(e3.value.body), str(e4.value.body))
    gw.assert_secret_absent(SD_KEY)
