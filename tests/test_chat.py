"""/v1/chat/completions: image routes from chat clients (the openai SDK, a Cherry Studio-shaped request).

Real gateway process; fake sd.exacg.cc, fake GrsAi and fake enhancement LLM on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionContentPartParam

from tests.gateway import GatewayProcess
from tests.upstreams import fake_grsai, fake_llm, fake_sd
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_grsai import GrsAiState
from tests.upstreams.fake_llm import LLMState
from tests.upstreams.fake_sd import SDState

SD_KEY = "sk-sd-SECRET-chat-5e6f7a8b9c"
GRS_KEY = "sk-grs-SECRET-chat-1234abcd"
LLM_KEY = "sk-llm-SECRET-chat-feedbeef42"
GW_KEY = "gw-SECRET-chat-gateway-0001"
KEYS = (SD_KEY, GRS_KEY, LLM_KEY, GW_KEY)
IMG = re.compile(r"!\[((?:\\.|[^\]\\])*)\]\(([^)\s]+)\)")


SHARED_CONFIG = "router: {retries: 0, cooldown_failures: 1000}\n"


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, FakeServer]]:
    out = {"sd": fake_sd.start(SDState(api_key=SD_KEY)), "llm": fake_llm.start(LLMState(api_key=LLM_KEY)),
           "grs": fake_grsai.start(GrsAiState(api_key=GRS_KEY, step_s=0.04))}
    yield out
    for s in out.values():
        s.stop()


@pytest.fixture
def ups(servers: dict[str, FakeServer]) -> dict[str, FakeServer]:
    for st in (servers["sd"].state, servers["llm"].state, servers["grs"].state):
        assert isinstance(st, SDState | LLMState | GrsAiState)
        st.reset()
    return servers


def _shared(tmp: pytest.TempPathFactory, name: str, environ: dict[str, str]) -> Iterator[GatewayProcess]:
    gw = GatewayProcess(tmp.mktemp(name), environ, SHARED_CONFIG).start()
    yield gw
    gw.kill()


@pytest.fixture(scope="module")
def enh_gw(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, FakeServer]) -> Iterator[GatewayProcess]:
    """With an enhancement key, a 1 s enhancement budget and 0.1 s keep-alives."""
    yield from _shared(tmp_path_factory, "enh", env(servers, ENHANCE_TIMEOUT_S="1", SSE_KEEPALIVE_S="0.1"))


@pytest.fixture(scope="module")
def plain_gw(tmp_path_factory: pytest.TempPathFactory, servers: dict[str, FakeServer]) -> Iterator[GatewayProcess]:
    """Without an enhancement key."""
    yield from _shared(tmp_path_factory, "plain", env(servers, llm_key=False))


@pytest.fixture
def enh(enh_gw: GatewayProcess, ups: dict[str, FakeServer]) -> GatewayProcess:
    return enh_gw


@pytest.fixture
def plain(plain_gw: GatewayProcess, ups: dict[str, FakeServer]) -> GatewayProcess:
    return plain_gw


def env(ups: dict[str, FakeServer], llm_key: bool = True, **extra: str) -> dict[str, str]:
    out = {"SD_API_KEY": SD_KEY, "SD_BASE_URL": ups["sd"].url, "GRSAI_API_KEY": GRS_KEY,
           "GRSAI_BASE_URL": ups["grs"].url, "ENHANCE_OPENAI_BASE_URL": ups["llm"].url + "/v1",
           "ENHANCE_OPENAI_MODEL": "fake-mini", "GATEWAY_API_KEY": GW_KEY, **extra}
    if llm_key:
        out["ENHANCE_OPENAI_API_KEY"] = LLM_KEY
    return out


def llm(ups: dict[str, FakeServer]) -> LLMState:
    assert isinstance(ups["llm"].state, LLMState)
    return ups["llm"].state


def sd_bodies(ups: dict[str, FakeServer]) -> list[dict[str, Any]]:
    return [r.json for r in ups["sd"].state.requests if r.path == fake_sd.GENERATE_PATH]


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=GW_KEY, max_retries=0)


def clean(gw: GatewayProcess, *texts: str) -> None:
    gw.remember(*texts)
    gw.assert_secret_absent(*KEYS)


def test_sdk_chat_with_enhancement_answers_markdown(enh: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = enh
    st = llm(ups)
    res = client(gw).chat.completions.create(model="Z-Image", messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "an old prompt"},
        {"role": "assistant", "content": "![x](http://old)"},
        {"role": "user", "content": "一只猫在看书"}])
    assert res.object == "chat.completion" and res.model == "Z-Image" and res.id.startswith("chatcmpl-")
    assert res.usage is not None and res.usage.total_tokens == 0
    assert res.choices[0].finish_reason == "stop" and res.choices[0].message.role == "assistant"
    content = res.choices[0].message.content or ""
    (alt, url), = IMG.findall(content)
    assert url.startswith(gw.url + "/images/") and httpx.get(url).status_code == 200  # hosted, not sd.exacg.cc's
    assert f"**✨ Enhanced Prompt:**\n{st.reply_prompt}" in content
    assert "**📝 Original Input:**\n一只猫在看书" in content
    assert content.endswith("**🎨 Aspect Ratio:** 3:2\n**📐 Resolution:** 1920×1280")
    (body,) = sd_bodies(ups)
    assert (body["prompt"], body["width"], body["height"]) == (st.reply_prompt, 1920, 1280)
    (call,) = st.requests
    assert call.json["messages"][1]["content"] == "一只猫在看书" and call.json["model"] == "fake-mini"
    clean(gw, res.model_dump_json())


def test_user_ratio_wins_over_the_llm_and_leaves_the_prompt(enh: GatewayProcess,
                                                            ups: dict[str, FakeServer]) -> None:
    gw = enh
    llm(ups).reply_ratio = "1:1"  # the LLM disobeys; the user's ratio stands
    res = client(gw).chat.completions.create(model="z-image", messages=[
        {"role": "user", "content": [{"type": "text", "text": "一只猫，比例 16:9，在看书"}]}])
    content = res.choices[0].message.content or ""
    (call,) = llm(ups).requests
    assert call.json["messages"][1]["content"] == "一只猫，在看书"
    assert "16:9" in call.json["messages"][0]["content"]
    (body,) = sd_bodies(ups)
    assert (body["width"], body["height"]) == (2048, 1152)
    assert "**🎨 Aspect Ratio:** 16:9\n**📐 Resolution:** 2048×1152" in content
    clean(gw, content)


def test_no_enhance_and_explicit_size(enh: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = enh
    res = client(gw).chat.completions.create(
        model="Z-Image", messages=[{"role": "user", "content": "a cat no-enhance reading, ratio 16:9"}],
        extra_body={"width": 1000, "height": 3000})
    content = res.choices[0].message.content or ""
    assert llm(ups).requests == []
    (body,) = sd_bodies(ups)
    assert (body["prompt"], body["width"], body["height"]) == ("a cat reading", 1000, 2048)
    assert "**📝 Prompt:**\na cat reading" in content and "Enhance" not in content
    assert "**🎨 Aspect Ratio:** Custom\n**📐 Resolution:** 1000×2048" in content
    clean(gw, content)


@pytest.mark.parametrize(("mode", "ok"), [("fenced", True), ("chatter", True), ("url_inside", True),
                                          ("garbage", False), ("slow", False), ("slow_body", False),
                                          ("error500", False)])
def test_enhancement_replies_and_silent_fallback(enh: GatewayProcess, ups: dict[str, FakeServer], mode: str,
                                                 ok: bool) -> None:
    gw = enh
    st = llm(ups)
    st.mode, st.slow_s = mode, 3.0
    started = time.monotonic()
    res = client(gw).chat.completions.create(model="Z-Image", messages=[{"role": "user", "content": "一只狐狸"}])
    assert time.monotonic() - started < 2.5  # the 1 s budget held, the slow LLM was not waited for
    content = res.choices[0].message.content or ""
    (body,) = sd_bodies(ups)
    if ok:
        assert "**✨ Enhanced Prompt:**" in content and body["prompt"].startswith(st.reply_prompt)
        assert (body["width"], body["height"]) == (1920, 1280)
    else:
        assert "**⚠️ Enhancement failed, using original prompt**" in content
        assert "**📝 Prompt:**\n一只狐狸" in content and body["prompt"] == "一只狐狸"
        assert "**🎨 Aspect Ratio:** 1:1\n**📐 Resolution:** 2048×2048" in content
    clean(gw, content)


def test_never_attempted_without_a_key(plain: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = plain
    res = client(gw).chat.completions.create(model="Z-Image", messages=[{"role": "user", "content": "a [big] cat"}],
                                             extra_body={"enhance": True})
    content = res.choices[0].message.content or ""
    assert llm(ups).requests == []
    assert "**📝 Prompt:**\na [big] cat" in content and "failed" not in content
    (alt, _url), = IMG.findall(content)
    assert alt == r"a \[big\] cat"  # escaped: a ] in the prompt cannot break the image syntax
    clean(gw, content)


def test_sdk_stream_shows_progress_as_reasoning_and_usage(plain: GatewayProcess,
                                                         ups: dict[str, FakeServer]) -> None:
    gw = plain
    stream = client(gw).chat.completions.create(
        model="nano-banana", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a paper boat --ar 16:9"}])
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    shown = [int(p) for p in re.findall(r"⏳ (\d+)%", reasoning)]
    assert shown == [0, 25, 50, 75]  # the fake's running snapshots, each shown once
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "%" not in content.split("---")[0] and "⏳" not in content  # progress stays out of the message
    (_alt, url), = IMG.findall(content)
    assert url.startswith(gw.url + "/images/") and httpx.get(url).status_code == 200  # GrsAi URL re-hosted
    assert "**🎨 Aspect Ratio:** 16:9" in content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    (sub,) = [r.json for r in ups["grs"].state.requests if r.path == "/v1/draw/nano-banana"]
    assert sub["aspectRatio"] == "16:9" and sub["prompt"] == "a paper boat"
    clean(gw, *(c.model_dump_json() for c in chunks))


def test_cherry_studio_shaped_stream_with_keepalive(enh: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = enh
    ups["sd"].state.delay_s = 0.6
    headers = {"Authorization": f"Bearer {GW_KEY}", "Content-Type": "application/json",
               "User-Agent": "Mozilla/5.0 CherryStudio/1.5.0 Chrome/134.0 Electron/35.0",
               "HTTP-Referer": "https://cherry-ai.com", "X-Title": "Cherry Studio", "Accept": "text/event-stream"}
    body = {"model": "Z-Image", "stream": True, "temperature": 1, "top_p": 1, "max_tokens": 4096,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": [{"type": "text", "text": "一只柴犬 ratio 9:16"}]}]}
    lines: list[str] = []
    with httpx.stream("POST", gw.base_url + "/chat/completions", headers=headers, json=body, timeout=30) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [x for x in r.iter_lines() if x]
    assert all(x.startswith(("data: ", ":")) for x in lines)
    assert ": keep-alive" in lines  # comments while the upstream is busy
    assert lines[-1] == "data: [DONE]"
    data = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(d["object"] == "chat.completion.chunk" and "usage" in d for d in data)
    content = "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
    assert "**🎨 Aspect Ratio:** 9:16\n**📐 Resolution:** 1152×2048" in content
    assert data[-1]["choices"] == [] and data[-1]["usage"]["total_tokens"] == 0
    assert sd_bodies(ups)[0]["prompt"] == llm(ups).reply_prompt
    clean(gw, *lines)


def test_errors(plain: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = plain
    c = client(gw)
    with pytest.raises(openai.NotFoundError) as nf:
        c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert nf.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as empty:
        c.chat.completions.create(model="Z-Image", messages=[{"role": "user", "content": "  "}])
    assert empty.value.param == "messages"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gw.base_url, api_key="wrong", max_retries=0).chat.completions.create(
            model="Z-Image", messages=[{"role": "user", "content": "hi"}])
    sd = ups["sd"].state
    assert isinstance(sd, SDState)
    sd.mode = "fail"
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="Z-Image", messages=[{"role": "user", "content": "a cat"}])
    assert "积分不足" in e.value.message
    with pytest.raises(openai.APIError) as mid:  # after the role chunk: an error object, then [DONE]
        list(c.chat.completions.create(model="Z-Image", stream=True,
                                       messages=[{"role": "user", "content": "a cat"}]))
    assert "积分不足" in mid.value.message
    clean(gw, str(nf.value.body), str(e.value.body), str(mid.value.body))


def test_image_parts_become_references_on_edit_routes(plain: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = plain
    ref = "data:image/png;base64,iVBORw0KGgo="
    parts: list[ChatCompletionContentPartParam] = [
        {"type": "text", "text": "make it"}, {"type": "image_url", "image_url": {"url": ref}},
        {"type": "text", "text": "blue"}]
    res = client(gw).chat.completions.create(model="nano-banana", messages=[{"role": "user", "content": parts}])
    (sub,) = [r.json for r in ups["grs"].state.requests if r.path == "/v1/draw/nano-banana"]
    assert sub["urls"] == [ref] and sub["prompt"] == "make it blue"
    z = client(gw).chat.completions.create(model="Z-Image", messages=[{"role": "user", "content": parts}])
    assert "reference image(s) ignored" in (z.choices[0].message.content or "")
    assert sd_bodies(ups)[0]["prompt"] == "make it blue"
    clean(gw, res.model_dump_json(), z.model_dump_json())


def test_models_serve_chat_clients(enh: GatewayProcess, ups: dict[str, FakeServer]) -> None:
    gw = enh
    ids = {m.id: m.owned_by for m in client(gw).models.list()}
    assert ids["Z-Image"] == "zimage" and ids["nano-banana"] == "grsai" and ids["sd-fast"] == "grsai"
    r = httpx.options(gw.base_url + "/chat/completions", headers={
        "Origin": "app://cherry", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "app://cherry")


def test_b64_providers_are_hosted_and_ratio_maps_to_size(plain: GatewayProcess) -> None:
    gw = plain  # the demo route, which answers base64
    res = client(gw).chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "a harbour, aspect ratio 16:9"}])
    content = res.choices[0].message.content or ""
    (alt, url), = IMG.findall(content)
    assert alt == "a harbour" and url.startswith(gw.url + "/images/")
    r = httpx.get(url)
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert "**🎨 Aspect Ratio:** 16:9\n**📐 Resolution:** 1024×576" in content
