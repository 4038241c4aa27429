"""Prompt length limits per route (`max_prompt_chars`, else OpenAI's own limits): a longer prompt
gets 400 `string_above_max_length` on `prompt`, before any work on it and before any upstream call,
from generations, edits and chat alike. In-process app (tests/inproc.py), fake OpenAI upstream."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import openai
import pytest

from image_gateway.config import ConfigError
from image_gateway.prompt.limits import max_prompt_chars
from tests import inproc
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

KEY = "sk-limits-test-0123456789abcdef"
YAML = """routes:
  - {name: demo, max_prompt_chars: 10}
  - {name: cheap, provider: openai, upstream_model: dall-e-2-budget}
"""


@pytest.fixture
async def gw(tmp_path: Path, openai_upstream: FakeServer,
             caplog: pytest.LogCaptureFixture) -> AsyncIterator[httpx.AsyncClient]:
    caplog.set_level(logging.DEBUG)
    env = {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1"}
    seen: list[str] = []

    async def remember(r: httpx.Response) -> None:
        seen.append(str(r.headers) + (await r.aread()).decode(errors="replace"))

    async with inproc.client(tmp_path, env, YAML) as c:
        c.event_hooks["response"].append(remember)
        yield c
    inproc.assert_secret_absent(tmp_path, [*seen, caplog.text], KEY)


def _error(r: httpx.Response, limit: int, length: int) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == "prompt"
    assert err["code"] == "string_above_max_length"
    assert f"maximum length {limit}" in err["message"] and f"length {length} " in err["message"]
    assert KEY not in r.text


@pytest.mark.parametrize(("model", "limit"), [("dall-e-2", 1000), ("cheap", 1000), ("dall-e-3", 4000),
                                              ("gpt-image-1", 32000), ("gpt-image-1.5", 32000)])
async def test_openai_routes_take_openais_limits(gw: httpx.AsyncClient, openai_upstream: FakeServer, model: str,
                                                 limit: int) -> None:
    r = await gw.post("/v1/images/generations", json={"model": model, "prompt": "x" * (limit + 1)})
    _error(r, limit, limit + 1)
    assert openai_upstream.state.count("/v1/images") == 0  # refused before the upstream saw it
    ok = await gw.post("/v1/images/generations", json={"model": model, "prompt": "x" * limit})
    assert ok.status_code == 200, ok.text
    assert fake_openai.last_request(openai_upstream.state).json["prompt"] == "x" * limit


async def test_route_option_sets_the_limit(gw: httpx.AsyncClient) -> None:
    assert (await gw.post("/v1/images/generations", json={"model": "demo", "prompt": "a red fox!",
                                                          "size": "64x64"})).status_code == 200
    _error(await gw.post("/v1/images/generations", json={"model": "demo", "prompt": "a red fox!!"}), 10, 11)


async def test_edits_are_limited_multipart_and_json(gw: httpx.AsyncClient, openai_upstream: FakeServer) -> None:
    png = fake_openai.make_image("in", 16, 16)
    r = await gw.post("/v1/images/edits", data={"model": "dall-e-2", "prompt": "y" * 1001},
                      files={"image": ("in.png", png, "image/png")})
    _error(r, 1000, 1001)
    data_url = "data:image/png;base64," + base64.b64encode(png).decode()
    r = await gw.post("/v1/images/edits", json={"model": "gpt-image-1", "prompt": "y" * 32001,
                                                "images": [{"image_url": data_url}]})
    _error(r, 32000, 32001)
    assert openai_upstream.state.count("/v1/images") == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_is_limited(gw: httpx.AsyncClient, stream: bool) -> None:
    body = {"model": "demo", "stream": stream, "messages": [{"role": "user", "content": "a red fox, ratio 16:9"}]}
    _error(await gw.post("/v1/chat/completions", json=body), 10, 21)


async def test_the_sdk_sees_openais_error(gw: httpx.AsyncClient) -> None:
    client = openai.AsyncOpenAI(base_url="http://gateway.test/v1", api_key="unused", max_retries=0,
                                http_client=gw)
    with pytest.raises(openai.BadRequestError) as info:
        await client.images.generate(model="dall-e-3", prompt="z" * 4001)
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
    cfg = inproc.config(tmp_path, config_yaml=YAML + "  - {name: dall-e-3, max_prompt_chars: 5000}\n")
    assert cfg.routes["dall-e-2"].max_prompt_chars == 1000
    assert cfg.routes["dall-e-3"].max_prompt_chars == 5000
    assert cfg.routes["cheap"].max_prompt_chars == 1000
    assert cfg.routes["demo"].max_prompt_chars == 10
    assert cfg.routes["gpt-image-1"].max_prompt_chars == 32000
    with pytest.raises(ConfigError, match="route demo: max_prompt_chars"):
        inproc.config(tmp_path, config_yaml="routes:\n  - {name: demo, max_prompt_chars: lots}\n")
