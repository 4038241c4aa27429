"""Client conformance, Python side: the real openai SDK and LangChain's DallEAPIWrapper
(langchain-community 0.4) over the demo, OpenAI, Midjourney, GrsAi and Z-Image routes.

What every client must get with the shipped default (`both` when the caller names no
response_format): something it can read, and URLs only on the gateway's own origin. The gateway
runs in this process; both libraries are handed its transport as their HTTP client (the SDK's
`http_client`, which DallEAPIWrapper passes on to the SDK it builds), so everything above the
socket is the libraries' own code.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import openai
import pytest
from langchain_community.utilities.dalle_image_generator import DallEAPIWrapper
from pydantic import SecretStr

from tests.clients.harness import EDIT_ROUTES, GW_KEY, ROUTES, Stack, check_keys, image, png, stack
from tests.inprocess import InProcessGateway


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("clients-py")) as s:
        yield s
        check_keys(s)


def sdk(st: Stack) -> openai.OpenAI:
    assert isinstance(st.gw, InProcessGateway)
    return st.gw.openai(GW_KEY, timeout=60)


@pytest.mark.parametrize("model", ROUTES)
def test_openai_sdk_default_answer_has_url_and_b64_of_the_same_image(st: Stack, model: str) -> None:
    res = sdk(st).images.generate(model=model, prompt="a lighthouse at dusk", size="1024x1024")
    (item,) = res.data or []
    assert item.url and item.b64_json, item
    assert st.is_own(item.url), item.url
    assert st.fetch(item.url) == base64.b64decode(item.b64_json)
    image(item.b64_json)


@pytest.mark.parametrize("model", ROUTES)
def test_openai_sdk_named_response_format_is_honoured(st: Stack, model: str) -> None:
    client = sdk(st)
    b64 = client.images.generate(model=model, prompt="a red fox", response_format="b64_json")
    url = client.images.generate(model=model, prompt="a red fox", response_format="url")
    assert b64.data and b64.data[0].b64_json and b64.data[0].url is None
    assert url.data and url.data[0].url and url.data[0].b64_json is None
    assert st.is_own(url.data[0].url), url.data[0].url
    image(st.fetch(url.data[0].url))


@pytest.mark.parametrize("model", EDIT_ROUTES)
def test_openai_sdk_edit(st: Stack, model: str) -> None:
    res = sdk(st).images.edit(model=model, prompt="make it blue", image=("in.png", png(), "image/png"))
    assert res.data and res.data[0].b64_json and res.data[0].url and st.is_own(res.data[0].url)
    image(res.data[0].b64_json)


def test_openai_sdk_edit_on_a_text_only_route_is_a_clear_400(st: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        sdk(st).images.edit(model="Z-Image", prompt="make it blue", image=("in.png", png(), "image/png"))
    err = e.value.body
    assert isinstance(err, dict) and err["code"] == "unsupported_operation" and err["param"] == "model"
    assert "does not support image edits" in err["message"]
    # (the SDK's create_variation is deprecated: variations go as the raw multipart it would send)
    var = st.post("/images/variations", data={"model": "Z-Image"}, files=[("image", ("in.png", png(), "image/png"))])
    assert var.status_code == 400 and var.json()["error"]["code"] == "unsupported_operation", var.text


@pytest.mark.parametrize("model", ROUTES)
def test_openai_sdk_stream_with_partial_images(st: Stack, model: str) -> None:
    stream = sdk(st).images.generate(model=model, prompt="a koi pond", stream=True, partial_images=2)
    events = list(stream)
    assert events[-1].type == "image_generation.completed", [ev.type for ev in events]
    assert image(events[-1].b64_json)
    assert sum(ev.type == "image_generation.partial_image" for ev in events) <= 2


@pytest.mark.parametrize("model", ROUTES)
def test_openai_sdk_chat_carries_the_hosted_image(st: Stack, model: str) -> None:
    res = sdk(st).chat.completions.create(model=model, messages=[{"role": "user", "content": "a tiny robot"}],
                                          extra_body={"modalities": ["image", "text"], "enhance": False})
    msg = res.choices[0].message
    images = (msg.model_extra or {}).get("images")
    assert images and images[0]["type"] == "image_url"
    url = images[0]["image_url"]["url"]
    assert st.is_own(url) and url in (msg.content or "")
    image(st.fetch(url))


@pytest.mark.parametrize("model", ROUTES)
def test_langchain_dalle_wrapper_gets_a_url_it_can_fetch(st: Stack, model: str) -> None:
    # langchain-community 0.4: sends no response_format and reads only `data[].url`.
    assert isinstance(st.gw, InProcessGateway)
    http_client = st.gw.openai(GW_KEY)._client  # the SDK's own HTTP client, over the in-process transport
    unused = openai.AsyncOpenAI(base_url=st.gw.base_url, api_key=GW_KEY).images  # (run() is synchronous)
    wrapper = DallEAPIWrapper(model=model, api_key=SecretStr(GW_KEY), base_url=st.gw.base_url, max_retries=0,
                              http_client=http_client, async_client=unused)
    out = wrapper.run("a watercolor heron")
    st.gw.remember(out)
    assert out != "No image was generated"
    assert st.is_own(out), out
    image(st.fetch(out))
