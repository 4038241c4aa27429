"""Prompt enhancement against a real fake OpenAI-compatible LLM server (tests/upstreams/fake_llm.py)."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from image_gateway.core.settings import EnhanceSettings
from image_gateway.prompt.enhance import EnhanceResult, build_system_prompt, enhance, parse_llm_json
from image_gateway.prompt.ratio import RATIOS
from tests.upstreams import fake_llm
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_llm import COMMENT_IN_PROMPT, URL_IN_PROMPT, LLMState

KEY = "sk-test-SECRET-4f1c9d2e7b3a"
ORIGINAL = "一只猫在看书"


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeServer]:
    server = fake_llm.start(LLMState(api_key=KEY))
    yield server
    server.stop()


@pytest.fixture
def state(llm: FakeServer) -> LLMState:
    st = llm.state
    assert isinstance(st, LLMState)
    st.reset()
    return st


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def settings(llm: FakeServer) -> EnhanceSettings:
    return EnhanceSettings(api_key=KEY, base_url=llm.url + "/v1", model="fake-mini", timeout_s=2.0)


@pytest.fixture(autouse=True)
def _debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)


def assert_no_key(result: EnhanceResult, settings: EnhanceSettings, caplog: pytest.LogCaptureFixture) -> None:
    assert KEY not in repr(result)
    assert KEY not in str(result.reason)
    assert KEY not in repr(settings) and KEY not in str(settings)
    assert KEY not in caplog.text
    for rec in caplog.records:
        assert KEY not in rec.getMessage()


def assert_fallback(result: EnhanceResult, original: str = ORIGINAL) -> None:
    assert result.ok is False
    assert result.prompt == original
    assert result.aspect_ratio is None
    assert result.reason


# --- against the fake server -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["clean", "fenced", "chatter"])
async def test_enhance_ok(
    mode: str,
    state: LLMState,
    session: aiohttp.ClientSession,
    settings: EnhanceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state.mode = mode
    state.reply_ratio = "16:9"
    result = await enhance(session, settings, ORIGINAL, None)
    assert result == EnhanceResult(ok=True, prompt=state.reply_prompt, aspect_ratio="16:9", reason=None)

    assert len(state.requests) == 1
    rec = state.requests[0]
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    body = rec.json
    assert body["model"] == "fake-mini"
    assert body["temperature"] == 0.7
    assert body["max_tokens"] == 1000
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][1]["content"] == ORIGINAL
    assert body["messages"][0]["content"] == build_system_prompt(None)
    assert_no_key(result, settings, caplog)


async def test_enhance_url_inside_strings_survives(
    state: LLMState,
    session: aiohttp.ClientSession,
    settings: EnhanceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state.mode = "url_inside"
    result = await enhance(session, settings, ORIGINAL, None)
    assert result.ok, result.reason
    assert URL_IN_PROMPT in result.prompt
    assert COMMENT_IN_PROMPT in result.prompt
    assert result.prompt.endswith("{ok}")
    assert result.aspect_ratio == "3:2"
    assert_no_key(result, settings, caplog)


async def test_enhance_unknown_llm_ratio_is_dropped(
    state: LLMState,
    session: aiohttp.ClientSession,
    settings: EnhanceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state.reply_ratio = "5:4"
    result = await enhance(session, settings, ORIGINAL, None)
    assert result.ok and result.aspect_ratio is None
    assert_no_key(result, settings, caplog)


async def test_user_ratio_is_never_overridden(
    state: LLMState,
    session: aiohttp.ClientSession,
    settings: EnhanceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state.reply_ratio = "1:1"  # the LLM disobeys and suggests one anyway
    result = await enhance(session, settings, ORIGINAL, "9:16")
    assert result.ok
    assert result.aspect_ratio is None
    system = state.requests[0].json["messages"][0]["content"]
    assert "9:16" in system
    assert '"aspect_ratio": null' in system
    assert_no_key(result, settings, caplog)


@pytest.mark.parametrize(
    ("mode", "reason_part"),
    [
        ("garbage", "no JSON object"),
        ("error500", "HTTP 500"),
        ("no_content", "no content"),
    ],
)
async def test_enhance_fallbacks(
    mode: str,
    reason_part: str,
    state: LLMState,
    session: aiohttp.ClientSession,
    settings: EnhanceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state.mode = mode
    result = await enhance(session, settings, ORIGINAL, None)
    assert_fallback(result)
    assert reason_part in str(result.reason)
    assert len(state.requests) == 1
    assert_no_key(result, settings, caplog)


@pytest.mark.parametrize("mode", ["slow", "slow_body"])
async def test_enhance_budget_covers_headers_and_body(
    mode: str,
    state: LLMState,
    session: aiohttp.ClientSession,
    llm: FakeServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    state.mode = mode
    state.slow_s = 2.0
    settings = EnhanceSettings(api_key=KEY, base_url=llm.url + "/v1", timeout_s=0.5)
    started = time.monotonic()
    result = await enhance(session, settings, ORIGINAL, None)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert_fallback(result)
    assert "timed out" in str(result.reason)
    assert len(state.requests) == 1
    assert_no_key(result, settings, caplog)


async def test_slow_body_sends_headers_first_and_a_valid_body(
    state: LLMState, session: aiohttp.ClientSession, llm: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The fake really sends headers at once (so a headers-only deadline would miss it) and the
    dribbled body is complete: with enough budget the enhancement succeeds."""
    state.mode = "slow_body"
    state.slow_s = 0.3
    started = time.monotonic()
    async with session.post(
        llm.url + "/v1/chat/completions",
        json={"model": "m", "messages": []},
        headers={"Authorization": f"Bearer {KEY}"},
    ) as resp:
        assert resp.status == 200
        assert time.monotonic() - started < 0.25
        await resp.read()
    assert time.monotonic() - started >= 0.25
    settings = EnhanceSettings(api_key=KEY, base_url=llm.url + "/v1", timeout_s=3.0)
    result = await enhance(session, settings, ORIGINAL, None)
    assert result.ok, result.reason
    assert_no_key(result, settings, caplog)


async def test_wrong_key_gets_401_without_leaking_it(
    state: LLMState, session: aiohttp.ClientSession, llm: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "sk-wrong-KEY-0000000000000"
    settings = EnhanceSettings(api_key=wrong, base_url=llm.url + "/v1/")  # trailing slash tolerated
    result = await enhance(session, settings, ORIGINAL, None)
    assert_fallback(result)
    assert "HTTP 401" in str(result.reason)
    assert wrong not in str(result.reason) and wrong not in repr(settings) and wrong not in caplog.text
    assert state.paths() == ["/v1/chat/completions"]


async def test_no_key_makes_no_request(
    state: LLMState, session: aiohttp.ClientSession, llm: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    for key in (None, ""):
        settings = EnhanceSettings(api_key=key, base_url=llm.url + "/v1")
        result = await enhance(session, settings, ORIGINAL, "16:9")
        assert_fallback(result)
        assert "ENHANCE_OPENAI_API_KEY" in str(result.reason)
    assert state.requests == []


async def test_connection_refused_falls_back(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = EnhanceSettings(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2.0)
    result = await enhance(session, settings, ORIGINAL, None)
    assert_fallback(result)
    assert str(result.reason).startswith("LLM request failed")
    assert_no_key(result, settings, caplog)


async def test_key_echoed_by_upstream_is_redacted(
    state: LLMState,
    session: aiohttp.ClientSession,
    settings: EnhanceSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from tests.upstreams.base import Fault

    state.fail_next(Fault(status=403, body={"error": {"message": f"key {KEY} is not allowed here"}}))
    result = await enhance(session, settings, ORIGINAL, None)
    assert_fallback(result)
    assert "HTTP 403" in str(result.reason) and "***" in str(result.reason)
    assert_no_key(result, settings, caplog)


# --- settings ---------------------------------------------------------------------------------------


def test_settings_repr_masks_key() -> None:
    s = EnhanceSettings(api_key=KEY)
    assert KEY not in repr(s)
    assert "sk-...7b3a" in repr(s)
    assert "short" not in repr(EnhanceSettings(api_key="short"))
    assert "api_key=None" in repr(EnhanceSettings(api_key=None))


def test_settings_from_the_environment_and_url() -> None:
    from image_gateway.config import ConfigError, load_config

    s = load_config({}, None, None).enhance
    assert (s.api_key, s.base_url, s.model, s.timeout_s) == (
        None,
        "https://api.openai.com/v1",
        "gpt-4o-mini",
        10.0,
    )
    assert s.url == "https://api.openai.com/v1/chat/completions"
    s = load_config(
        {
            "ENHANCE_OPENAI_API_KEY": KEY,
            "ENHANCE_OPENAI_BASE_URL": "http://llm.local/api/chat/completions",
            "ENHANCE_OPENAI_MODEL": "qwen",
            "ENHANCE_TIMEOUT_S": "3.5",
        },
        None,
        None,
    ).enhance
    assert (s.api_key, s.model, s.timeout_s) == (KEY, "qwen", 3.5)
    assert s.url == "http://llm.local/api/chat/completions"
    with pytest.raises(ConfigError):
        load_config({"ENHANCE_TIMEOUT_S": "soon"}, None, None)


# --- system prompt ----------------------------------------------------------------------------------


def test_system_prompt_without_user_ratio() -> None:
    text = build_system_prompt(None)
    for ratio in RATIOS:
        assert f'"{ratio}"' in text
    assert "English" in text and "50-100 words" in text
    assert "verbatim" in text and "never translated" in text
    assert "JSON" in text and "code fences" in text
    assert "already chosen" not in text


def test_system_prompt_with_user_ratio() -> None:
    text = build_system_prompt("21:9")
    assert "already chosen the aspect ratio (21:9)" in text
    assert '"aspect_ratio": null' in text


# --- parser -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "a cat", "aspect_ratio": "16:9"}', ("a cat", "16:9")),
        ('```json\n{"prompt": "a cat", "aspect_ratio": "9:16"}\n```', ("a cat", "9:16")),
        ('```\n{"prompt": "a cat", "aspect_ratio": null}\n```', ("a cat", None)),
        ('Here you go: {"prompt": "a cat", "aspect_ratio": "3:2"} enjoy {x}', ("a cat", "3:2")),
        (
            '{"prompt": "a sign \\"}{\\" and https://a.b/c // d /* e */", "aspect_ratio": "1:1"}',
            ('a sign "}{" and https://a.b/c // d /* e */', "1:1"),
        ),
        ('<think>maybe {"prompt": ""}</think>{"prompt": "a cat", "aspect_ratio": "2:1"}', ("a cat", "2:1")),
        ('{"note": "x"} then {"prompt": "a cat"}', ("a cat", None)),
        ('{\n  // the prompt\n  "prompt": "a cat", /* ratio */ "aspect_ratio": "4:3",\n}', ("a cat", "4:3")),
        ('{"prompt": "  a cat  ", "aspect_ratio": "16：9"}', ("a cat", "16:9")),
        ('{"prompt": "a cat", "aspect_ratio": "5:4"}', ("a cat", None)),
        ('{"prompt": "a cat", "aspect_ratio": 1.5}', ("a cat", None)),
        ('{"prompt": "牌子上写着“你好”", "aspect_ratio": "21:9"}', ("牌子上写着“你好”", "21:9")),
        # the scanning that replaced the backtracking regexes keeps their behaviour
        ('<think>no end {"prompt": "a"}', ("a", None)),
        ('<THINK>x {"prompt": "no"}</think>{"prompt": "b"}', ("b", None)),
        ('```JSONC\n{"prompt": "c", // x\n}\n```', ("c", None)),
        ('{"x": 1} ```json\n{"prompt": "d",}\n``` {"prompt": "e"}', ("d", None)),
        ('{"prompt": "f", "aspect_ratio": " 16 : 9 "} /* unterminated', ("f", "16:9")),
        ("[" * 5000 + '{"prompt": "g"}', ("g", None)),
        # superscript digits pass str.isdigit() but not int(): not a ratio, never an exception
        ('{"prompt": "h", "aspect_ratio": "²:1"}', ("h", None)),
        ('{"prompt": "i", "aspect_ratio": "1:' + "9" * 5000 + '"}', ("i", None)),
    ],
)
def test_parse_llm_json(content: str, expected: tuple[str, str | None]) -> None:
    assert parse_llm_json(content) == expected


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty"),
        ("no json here", "no JSON object"),
        ('{"prompt": "unterminated', "no JSON object"),
        ('{"prompt": ""}', '"prompt"'),
        ('{"prompt": 42}', '"prompt"'),
        ('{"text": "a cat"}', '"prompt"'),
        ('["a cat"]', "no JSON object"),
        # nesting deeper than the decoder goes: a reason, not a RecursionError out of enhance()
        ('{"a":' * 1200 + '{"prompt": "x"}' + "}" * 1200, "nests too many objects"),
    ],
)
def test_parse_llm_json_errors(content: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_llm_json(content)
