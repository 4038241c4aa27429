"""Prompt length limits per route (`max_prompt_chars`, else OpenAI's own limits): a longer prompt
gets 400 `string_above_max_length` on `prompt`, before any work on it and before any upstream call,
from generations, edits and chat alike. In-process app (tests/inprocess.py), fake OpenAI upstream."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from image_gateway.config import ConfigError
from image_gateway.prompt.limits import max_prompt_chars
from tests import inprocess
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

KEY = "sk-limits-test-0123456789abcdef"
YAML = """routes:
  - {name: demo, max_prompt_chars: 10}
  - {name: cheap, provider: openai, upstream_model: dall-e-2-budget}
"""


@pytest.fixture
def gw(tmp_path: Path, openai_upstream: FakeServer) -> Iterator[InProcessGateway]:
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1"}
    with InProcessGateway(tmp_path, env, YAML) as g:
        yield g
    g.assert_secret_absent(KEY)


def _error(r: httpx.Response, limit: int, length: int) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "prompt"
    assert err["code"] == "string_above_max_length"
    assert f"maximum length {limit}" in err["message"] and f"length {length} " in err["message"]
    assert KEY not in r.text


@pytest.mark.parametrize(("model", "limit"), [("dall-e-2", 1000), ("cheap", 1000), ("dall-e-3", 4000),
                                              ("gpt-image-1", 32000), ("gpt-image-1.5", 32000)])
def test_openai_routes_take_openais_limits(gw: InProcessGateway, openai_upstream: FakeServer, model: str,
                                           limit: int) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": model, "prompt": "x" * (limit + 1)})
    _error(r, limit, limit + 1)
    assert openai_upstream.state.count("/v1/images") == 0  # refused before the upstream saw it
    ok = gw.http.post("/v1/images/generations", json={"model": model, "prompt": "x" * limit})
    assert ok.status_code == 200, ok.text
    assert fake_openai.last_request(openai_upstream.state).json["prompt"] == "x" * limit


def test_route_option_sets_the_limit(gw: InProcessGateway) -> None:
    assert (gw.http.post("/v1/images/generations", json={"model": "demo", "prompt": "a red fox!",
                                                         "size": "64x64"})).status_code == 200
    _error(gw.http.post("/v1/images/generations", json={"model": "demo", "prompt": "a red fox!!"}), 10, 11)


def test_edits_are_limited_multipart_and_json(gw: InProcessGateway, openai_upstream: FakeServer) -> None:
    png = fake_openai.make_image("in", 16, 16)
    r = gw.http.post("/v1/images/edits", data={"model": "dall-e-2", "prompt": "y" * 1001},
                     files={"image": ("in.png", png, "image/png")})
    _error(r, 1000, 1001)
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    r = gw.http.post("/v1/images/edits", json={"model": "gpt-image-1", "prompt": "y" * 32001,
                                               "images": [{"image_url": data_url}]})
    _error(r, 32000, 32001)
    assert openai_upstream.state.count("/v1/images") == 0


@pytest.mark.parametrize("stream", [False, True])
def test_chat_is_limited(gw: InProcessGateway, stream: bool) -> None:
    body = {"model": "demo", "stream": stream, "messages": [{"role": "user", "content": "a red fox, ratio 16:9"}]}
    _error(gw.http.post("/v1/chat/completions", json=body), 10, 21)


def test_the_sdk_sees_openais_error(gw: InProcessGateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        gw.openai().images.generate(model="dall-e-3", prompt="z" * 4001)
    assert info.value.code == "string_above_max_length" and info.value.param == "prompt"


def test_defaults_and_option() -> None:
    assert max_prompt_chars("openai", "dall-e-2", {}) == 1000
    assert max_prompt_chars("openai", "dall-e-3", {}) == 4000
    assert max_prompt_chars("openai", "gpt-image-1-mini", {}) == 32000
    assert max_prompt_chars("grsai", "dall-e-3", {}) == 32000  # only OpenAI's own routes take OpenAI's limits
    assert max_prompt_chars("midjourney", "--v 7", {}) == 32000
    assert max_prompt_chars("openai", "dall-e-2", {"max_prompt_chars": 1500}) == 1500
    assert max_prompt_chars("demo", "demo", {"max_prompt_chars": "64"}) == 64
    for bad in (0, -1, "many", 1.5, True, [1]):
        with pytest.raises(ValueError, match="max_prompt_chars"):
            max_prompt_chars("demo", "demo", {"max_prompt_chars": bad})


def test_config_resolves_each_route_once(tmp_path: Path) -> None:
    cfg = inprocess.config(tmp_path, config_yaml=YAML + "  - {name: dall-e-3, max_prompt_chars: 5000}\n")
    assert cfg.routes["dall-e-2"].max_prompt_chars == 1000
    assert cfg.routes["dall-e-3"].max_prompt_chars == 5000
    assert cfg.routes["cheap"].max_prompt_chars == 1000
    assert cfg.routes["demo"].max_prompt_chars == 10
    assert cfg.routes["gpt-image-1"].max_prompt_chars == 32000
    with pytest.raises(ConfigError, match="route demo: max_prompt_chars"):
        inprocess.config(tmp_path, config_yaml="routes:\n  - {name: demo, max_prompt_chars: lots}\n")
