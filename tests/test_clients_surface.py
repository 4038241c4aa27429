"""Client conformance, GUI clients: the requests of Open WebUI, Cherry Studio, LobeChat, n8n, Dify and
LlamaIndex replayed as their source sends them (../shared/docs/anchors.md §3.1), and their answers
read as they read them, over the demo, OpenAI, Midjourney, GrsAi and Z-Image routes. The gateway
runs in this process; fake upstreams on 127.0.0.1.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.clients.harness import EDIT_ROUTES, GW_KEY, ROUTES, Stack, check_keys, image, png, stack
from tests.inprocess import InProcessGateway


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("clients-gui")) as s:
        yield s
        check_keys(s)


def sdk(st: Stack) -> openai.OpenAI:
    assert isinstance(st.gw, InProcessGateway)
    return st.gw.openai(GW_KEY, timeout=60)


# ------------------------------------------------------------------------------------------ Open WebUI


def _owui_read(st: Stack, item: dict[str, Any]) -> bytes:
    """Open WebUI's reading: `url` first, downloaded with the caller's Authorization header."""
    if item.get("url"):
        assert st.is_own(item["url"]), f"Open WebUI would send the gateway key to {item['url']}"
        return st.fetch(item["url"], auth=True)
    return base64.b64decode(item["b64_json"])


def _owui_format(model: str) -> dict[str, str]:
    """b64_json unless the model matches IMAGE_URL_RESPONSE_MODELS_REGEX_PATTERN (default ^gpt-image)."""
    return {} if re.match(r"^gpt-image", model) else {"response_format": "b64_json"}


@pytest.mark.parametrize("model", ROUTES)
def test_open_webui_generation(st: Stack, model: str) -> None:
    r = st.post("/images/generations", json={"model": model, "prompt": "a snowy cabin", "n": 1, "size": "512x512",
                                             **_owui_format(model)})
    assert r.status_code == 200, r.text
    for item in r.json()["data"]:
        image(_owui_read(st, item))


@pytest.mark.parametrize("model", EDIT_ROUTES)
@pytest.mark.parametrize("count", (1, 3))
def test_open_webui_edit_multipart(st: Stack, model: str, count: int) -> None:
    field = "image" if count == 1 else "image[]"  # one file: `image`; several: `image[]`; no mask
    files = [(field, (f"{i}.png", png((i * 60, 0, 0)), "image/png")) for i in range(count)]
    r = st.post("/images/edits", data={"model": model, "prompt": "add a rainbow", "n": "1", **_owui_format(model)},
                files=files)
    assert r.status_code == 200, r.text
    for item in r.json()["data"]:
        image(_owui_read(st, item))


def test_open_webui_edit_on_a_text_only_route_is_a_clear_4xx(st: Stack) -> None:
    r = st.post("/images/edits", data={"model": "Z-Image", "prompt": "x", "response_format": "b64_json"},
                files=[("image", ("a.png", png(), "image/png"))])
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "unsupported_operation"


# ------------------------------------------------------------------------------------------ Cherry Studio


def test_cherry_studio_lists_every_route_as_a_painting_model(st: Stack) -> None:
    r = st.get(st.gw.base_url + "/models", headers={"Authorization": f"Bearer {GW_KEY}"})
    assert r.status_code == 200
    # Cherry Studio takes the first supported_endpoint_types entry as the model's type.
    painting = {m["id"] for m in r.json()["data"]
                if (m.get("supported_endpoint_types") or [None])[0] == "image-generation"}
    assert set(ROUTES) <= painting


@pytest.mark.parametrize("model", ROUTES)
def test_cherry_studio_painting(st: Stack, model: str) -> None:
    body = {"prompt": "a paper crane", "model": model, "size": "1024x1024", "n": 1, "quality": "high",
            "background": "opaque", "moderation": "low"}  # "auto" values are left out by the client
    r = st.post("/images/generations", json=body)
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert st.is_own(item["url"]) and item["b64_json"]


@pytest.mark.parametrize("model", EDIT_ROUTES)
def test_cherry_studio_edit_repeats_the_image_field(st: Stack, model: str) -> None:
    files = [("image", (f"{i}.png", png((0, i * 40, 0)), "image/png")) for i in range(3)]
    r = st.post("/images/edits", data={"prompt": "make it night", "model": model, "n": "1"}, files=files)
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert st.is_own(item["url"]) and item["b64_json"]


def test_cherry_studio_edit_sends_all_sixteen_images(st: Stack) -> None:
    files = [("image", (f"{i}.png", png((i * 15, 0, 0)), "image/png")) for i in range(16)]
    r = st.post("/images/edits", data={"prompt": "a collage", "model": "gpt-image-1"}, files=files)
    assert r.status_code == 200, r.text
    rec = st.last("openai", "/images/edits")
    assert sum(len(v) for k, v in rec.files.items() if k.startswith("image")) == 16


# ------------------------------------------------------------------------------------------ LobeChat


@pytest.mark.parametrize("model", ROUTES)
def test_lobechat_reads_data_0(st: Stack, model: str) -> None:
    # createImage: b64_json asked only for dall-e*; reads data[0] only: b64 → data URL, else the URL.
    kwargs: dict[str, Any] = {"response_format": "b64_json"} if model.startswith("dall-e") else {}
    res = sdk(st).images.generate(model=model, prompt="a comet", n=1, **kwargs)
    assert res.data
    first = res.data[0]
    image(first.b64_json if first.b64_json else st.fetch(first.url or ""))


@pytest.mark.parametrize("model", ("demo", "Z-Image", "nano-banana", "mj-v6"))
def test_lobechat_chat_image_mode_reads_message_images(st: Stack, model: str) -> None:
    res = sdk(st).chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a tiny robot"}],
        extra_body={"modalities": ["image", "text"]})
    msg = res.choices[0].message
    images = (msg.model_extra or {}).get("images")  # read before content parts and Markdown
    assert images and images[0]["type"] == "image_url"
    url = images[0]["image_url"]["url"]
    assert st.is_own(url) and url in (msg.content or "")
    image(st.fetch(url))


# ------------------------------------------------------------------------------------------ n8n, Dify, LlamaIndex


@pytest.mark.parametrize("model", ("dall-e-3", "gpt-image-1"))
def test_n8n_openai_node(st: Stack, model: str) -> None:
    body: dict[str, Any] = {"prompt": "a brass compass", "model": model, "size": "1024x1024"}
    if model != "gpt-image-1":  # n8n omits response_format for gpt-image-1, else b64_json by default
        body["response_format"] = "b64_json"
    r = st.post("/images/generations", json=body)
    assert r.status_code == 200, r.text
    image(r.json()["data"][0]["b64_json"])


def test_dify_dalle3_tool(st: Stack) -> None:
    res = sdk(st).images.generate(model="dall-e-3", prompt="a glass teapot", size="1024x1792", quality="hd",
                                  style="vivid", n=1, response_format="b64_json")
    assert res.data and res.data[0].b64_json
    image(res.data[0].b64_json)
    rec = st.last("openai", "/generations")
    assert rec.json["quality"] == "hd" and rec.json["style"] == "vivid"


@pytest.mark.parametrize("download", (True, False))
def test_llamaindex_image_tool(st: Stack, download: bool) -> None:
    res = sdk(st).images.generate(model="dall-e-3", prompt="an origami fox", quality="standard", n=1,
                                  size="1024x1024", style="vivid", response_format="b64_json" if download else "url")
    first = (res.data or [])[0]  # data[0] only
    if download:
        image(first.b64_json or "")
    else:
        assert first.url and st.is_own(first.url)
        image(st.fetch(first.url))
