"""The gateway features the client-conformance work added (issue 17, items 1-4; the clients themselves:
tests/test_clients_python.py, test_clients_node.py, test_clients_surface.py):

1. the answer form when the caller names no response_format (`server.default_response_format`,
   per-route `default_response_format`), caller-named forms always honoured;
2. returned URLs on the gateway's own origin (re-hosted), unless a route, deployment or provider
   says `rehost: false`;
3. `GET /v1/models` entries with `supported_endpoint_types` and what the route supports;
4. the chat surface: `message.images`, `modalities`, `image_config`, multi-turn edits.

The gateway in this process (tests/inprocess.py), fake upstreams on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from image_gateway.config import ConfigError, load_config
from tests.clients.harness import KEYS, ROUTES, Stack, check_keys, image, png, stack
from tests.waits import wait_until

IMG = re.compile(r"!\[(?:\\.|[^\]\\])*\]\(([^)\s]+)\)")
ROUTE_OPTIONS = """
routes:
  - {name: demo-native, provider: demo, upstream_model: demo, default_response_format: native}
  - {name: dalle-direct, provider: openai, upstream_model: dall-e-3, rehost: false}
  - {name: mj-v6-up, provider: midjourney, upstream_model: "--v 6.1", upscale: true}
  - {name: z-direct, provider: zimage, upstream_model: Z-Image, deployments: [{name: site, rehost: false}]}
"""


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("surface"), ROUTE_OPTIONS) as s:
        yield s
        check_keys(s)


def gen(st: Stack, **body: Any) -> dict[str, Any]:
    r = st.post("/images/generations", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def edit_inputs(rec: Any) -> list[bytes]:
    """The images an OpenAI edit call carried: multipart files, or JSON `images` data URLs."""
    if isinstance(rec.json, dict):
        return [base64.b64decode(i["image_url"].split(",", 1)[1]) for i in rec.json["images"]]
    return [p[2] for k, v in rec.files.items() if k.startswith("image") for p in v]


# ------------------------------------------------------------------------------ 1. default response form


def test_shipped_default_is_both_the_same_image(st: Stack) -> None:
    for model in ROUTES:
        (item,) = gen(st, model=model, prompt="a lighthouse")["data"]
        assert item["url"] and item["b64_json"], (model, item)
        assert st.is_own(item["url"]) and st.fetch(item["url"]) == base64.b64decode(item["b64_json"])


def test_route_override_native_gives_what_the_upstream_gave(st: Stack) -> None:
    (item,) = gen(st, model="demo-native", prompt="a red fox")["data"]
    assert set(item) == {"b64_json"}  # the demo draws base64: no URL, nothing stored
    (named,) = gen(st, model="demo-native", prompt="a red fox", response_format="url")["data"]
    assert set(named) == {"url"} and st.is_own(named["url"])


@pytest.mark.parametrize("model", ("dall-e-3", "Z-Image", "nano-banana", "mj-v6"))
def test_caller_named_b64_json_is_honoured_for_url_upstreams(st: Stack, model: str) -> None:
    (item,) = gen(st, model=model, prompt="a blue whale", response_format="b64_json")["data"]
    assert set(item) - {"revised_prompt"} == {"b64_json"}
    image(item["b64_json"])


def test_dalle_is_asked_for_base64_when_the_gateway_needs_the_bytes_anyway(st: Stack) -> None:
    # `both` needs the bytes (for b64_json) and a hosted copy (for url): asking DALL·E for base64
    # saves downloading its URL. A caller asking for `url` gets a hosted copy the same way.
    before = len([r for r in st.ups["openai"].state.requests if r.path.startswith("/files/")])
    for rf in (None, "url"):
        body = {"model": "dall-e-3", "prompt": "a kite"} | ({"response_format": rf} if rf else {})
        item = gen(st, **body)["data"][0]
        assert st.is_own(item["url"])
        assert st.last("openai", "/images/generations").json["response_format"] == "b64_json"
    assert len([r for r in st.ups["openai"].state.requests if r.path.startswith("/files/")]) == before


def test_server_default_setting_and_its_validation(tmp_path: Path) -> None:
    assert load_config({}, env_file=None).default_response_format == "both"
    assert load_config({"DEFAULT_RESPONSE_FORMAT": "b64_json"}, env_file=None).default_response_format == "b64_json"
    cfg = tmp_path / "g.yaml"
    cfg.write_text("server: {default_response_format: url}\n")
    assert load_config({}, config_path=cfg, env_file=None).default_response_format == "url"
    with pytest.raises(ConfigError, match="DEFAULT_RESPONSE_FORMAT must be one of both, url, b64_json, native"):
        load_config({"DEFAULT_RESPONSE_FORMAT": "png"}, env_file=None)
    cfg.write_text("routes: [{name: demo, default_response_format: base64}]\n")
    with pytest.raises(ConfigError, match="default_response_format"):
        load_config({}, config_path=cfg, env_file=None)
    cfg.write_text("providers: {zimage: {rehost: maybe}}\n")
    with pytest.raises(ConfigError, match="rehost"):
        load_config({}, config_path=cfg, env_file=None)


def test_server_default_url_gives_url_only(tmp_path: Path) -> None:
    with stack(tmp_path / "gw", DEFAULT_RESPONSE_FORMAT="url") as s:
        (item,) = gen(s, model="gpt-image-1", prompt="a teacup")["data"]
        assert set(item) == {"url"} and s.is_own(item["url"])
        check_keys(s)


def test_async_task_result_uses_the_default_form(st: Stack) -> None:
    r = st.post("/images/generations", json={"model": "Z-Image", "prompt": "a moth"},
                headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    url = st.gw.base_url + "/images/tasks/" + r.json()["id"]

    def ended() -> dict[str, Any] | None:
        task: dict[str, Any] = st.get(url, headers={"Authorization": f"Bearer {KEYS[0]}"}).json()
        return task if task["status"] not in ("queued", "in_progress") else None

    task = wait_until(ended, 30, what="the task to end")
    assert task is not None and task["status"] == "succeeded", task
    (item,) = task["result"]["data"]
    assert item["b64_json"] and st.is_own(item["url"])


# ------------------------------------------------------------------------------ 2. own-origin URLs


@pytest.mark.parametrize("model", ("dall-e-3", "Z-Image", "nano-banana", "mj-v6-up"))
def test_upstream_urls_are_rehosted_on_the_gateway(st: Stack, model: str) -> None:
    (item,) = gen(st, model=model, prompt="a paper boat", response_format="url")["data"]
    assert st.is_own(item["url"]), item["url"]
    image(st.fetch(item["url"]))


def test_a_route_can_pass_the_upstream_url_through(st: Stack) -> None:
    (item,) = gen(st, model="dalle-direct", prompt="a paper boat", response_format="url")["data"]
    assert not st.is_own(item["url"]) and item["url"].startswith(st.ups["openai"].url + "/files/")
    assert st.last("openai", "/images/generations").json["response_format"] == "url"


def test_a_deployment_can_pass_the_upstream_url_through(st: Stack) -> None:
    (item,) = gen(st, model="z-direct", prompt="a paper boat", response_format="url")["data"]
    assert item["url"].startswith(st.ups["sd"].url + "/"), item["url"]


def test_a_provider_can_pass_its_upstream_urls_through(tmp_path: Path) -> None:
    # The same option, set once for every route of a provider (CONFIG's `providers:` block).
    with stack(tmp_path / "gw", "  zimage: {rehost: false}\n") as s:
        (item,) = gen(s, model="Z-Image", prompt="a fern", response_format="url")["data"]
        assert item["url"].startswith(s.ups["sd"].url + "/"), item["url"]
        (hosted,) = gen(s, model="dall-e-3", prompt="a fern", response_format="url")["data"]
        assert s.is_own(hosted["url"])
        check_keys(s)


def test_hosted_names_are_unguessable(st: Stack) -> None:
    names = {gen(st, model="demo", prompt=f"p{i}")["data"][0]["url"].rsplit("/", 1)[1] for i in range(5)}
    assert len(names) == 5
    for name in names:
        stem = name.split(".")[0]
        assert re.fullmatch(r"[A-Za-z0-9_-]{24,}", stem), name  # >= 144 random bits, URL-safe


def test_public_base_url_is_the_base_of_hosted_urls(tmp_path: Path) -> None:
    with stack(tmp_path / "gw", PUBLIC_BASE_URL="https://img.example.test/gw") as s:
        (item,) = gen(s, model="Z-Image", prompt="a fern")["data"]
        assert item["url"].startswith("https://img.example.test/gw/images/")
        check_keys(s)


# ------------------------------------------------------------------------------ 3. GET /v1/models


def test_models_carry_endpoint_types_and_capabilities(st: Stack) -> None:
    r = st.get(st.gw.base_url + "/models", headers={"Authorization": f"Bearer {KEYS[0]}"})
    by_id = {m["id"]: m for m in r.json()["data"]}
    for name in ROUTES:
        m = by_id[name]
        assert list(m)[:4] == ["id", "object", "created", "owned_by"], list(m)
        assert m["supported_endpoint_types"] == ["image-generation", "openai"]
        caps = m["capabilities"]
        assert caps["generations"] is True and caps["stream"] is True and caps["chat"] is True
        assert isinstance(caps["sizes"], list) and caps["sizes"]
    assert by_id["gpt-image-1"]["capabilities"]["edits"] and by_id["gpt-image-1"]["capabilities"]["variations"]
    assert by_id["Z-Image"]["capabilities"]["edits"] is False
    assert by_id["Z-Image"]["capabilities"]["variations"] is False
    assert by_id["Z-Image"]["capabilities"]["custom_sizes"] is True
    assert by_id["mj-v6"]["capabilities"]["edits"] is True
    assert "1792x1024" in by_id["dall-e-3"]["capabilities"]["sizes"]
    assert by_id["dall-e-3"]["capabilities"]["custom_sizes"] is False
    one = st.get(st.gw.base_url + "/models/Z-Image", headers={"Authorization": f"Bearer {KEYS[0]}"}).json()
    assert one == by_id["Z-Image"]


# ------------------------------------------------------------------------------ 4. chat surface


def chat(st: Stack, **body: Any) -> dict[str, Any]:
    r = st.post("/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def test_chat_answer_carries_openrouter_images(st: Stack) -> None:
    res = chat(st, model="demo", messages=[{"role": "user", "content": "a red fox"}], n=2,
               modalities=["image", "text"])
    msg = res["choices"][0]["message"]
    urls = IMG.findall(msg["content"])
    assert len(urls) == 2
    assert msg["images"] == [{"type": "image_url", "image_url": {"url": u}, "index": i} for i, u in enumerate(urls)]
    assert all(st.is_own(u) for u in urls)


def test_chat_stream_images_in_a_delta_and_short_lines(st: Stack) -> None:
    r = st.post("/chat/completions", json={"model": "gpt-image-1", "stream": True, "modalities": ["image", "text"],
                                           "messages": [{"role": "user", "content": "a big poster"}]})
    lines = r.text.splitlines()
    assert max(len(line) for line in lines) < 128 * 1024
    chunks = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    images = [img for c in chunks for ch in c["choices"] for img in ch["delta"].get("images", [])]
    assert len(images) == 1 and st.is_own(images[0]["image_url"]["url"])
    assert not any("data:image" in line for line in lines)


@pytest.mark.parametrize(("model", "expect"), (("Z-Image", (2048, 1152)), ("gpt-image-1", "1536x1024")))
def test_chat_image_config_aspect_ratio(st: Stack, model: str, expect: Any) -> None:
    res = chat(st, model=model, messages=[{"role": "user", "content": "a wide valley"}],
               image_config={"aspect_ratio": "16:9"}, enhance=False)
    content = res["choices"][0]["message"]["content"]
    assert "**🎨 Aspect Ratio:** 16:9" in content, content
    if model == "Z-Image":
        body = st.last("sd", "/generate_image").json
        assert (body["width"], body["height"]) == expect
    else:
        assert st.last("openai", "/images/generations").json["size"] == expect


def test_chat_bad_image_config_is_a_400(st: Stack) -> None:
    for bad in ({"image_config": {"aspect_ratio": "wide"}}, {"modalities": "image"}):
        r = st.post("/chat/completions", json={"model": "demo", "messages": [{"role": "user", "content": "x"}], **bad})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] in ("image_config.aspect_ratio", "modalities"), r.text


def test_chat_multi_turn_edits_the_earlier_assistant_image(st: Stack) -> None:
    first = chat(st, model="gpt-image-1", messages=[{"role": "user", "content": "a red bicycle"}], enhance=False)
    answer = first["choices"][0]["message"]["content"]
    (url,) = IMG.findall(answer)
    hosted = st.fetch(url)
    messages = [{"role": "user", "content": "a red bicycle"}, {"role": "assistant", "content": answer},
                {"role": "user", "content": "make it blue"}]
    second = chat(st, model="gpt-image-1", messages=messages, enhance=False)
    rec = st.last("openai", "/images/edits")
    assert edit_inputs(rec) == [hosted]  # the earlier answer's image went up as the edit input, read from our store
    assert rec.extra["prompt"] == "make it blue"
    assert IMG.findall(second["choices"][0]["message"]["content"])


def test_chat_multi_turn_uses_an_earlier_user_image_part(st: Stack) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(png((1, 2, 3))).decode()
    messages = [{"role": "user", "content": [{"type": "text", "text": "here is my cat"},
                                             {"type": "image_url", "image_url": {"url": data_url}}]},
                {"role": "assistant", "content": "Nice cat."},
                {"role": "user", "content": "draw it as a knight"}]
    chat(st, model="gpt-image-1", messages=messages, enhance=False)
    assert edit_inputs(st.last("openai", "/images/edits")) == [png((1, 2, 3))]


def test_chat_multi_turn_url_of_another_host_goes_through_the_egress_policy(st: Stack) -> None:
    # An earlier image that is not the gateway's own is a caller URL: a private address is refused.
    messages = [{"role": "assistant", "content": "![cat](http://127.0.0.1:9/cat.png)"},
                {"role": "user", "content": "make it blue"}]
    r = st.post("/chat/completions", json={"model": "gpt-image-1", "messages": messages, "enhance": False})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "url_not_allowed" and err["param"] == "messages", err


def test_chat_on_a_text_only_route_ignores_earlier_images(st: Stack) -> None:
    first = chat(st, model="Z-Image", messages=[{"role": "user", "content": "a pine"}], enhance=False)
    answer = first["choices"][0]["message"]["content"]
    res = chat(st, model="Z-Image", enhance=False, messages=[
        {"role": "user", "content": "a pine"}, {"role": "assistant", "content": answer},
        {"role": "user", "content": "now in snow"}])
    assert IMG.findall(res["choices"][0]["message"]["content"])
    assert st.last("sd", "/generate_image").json["prompt"] == "now in snow"
