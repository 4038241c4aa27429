"""OpenRouter through the Images API: `openrouter/<model>` names → the gateway app (in-process) → the fake
OpenRouter chat-completions API on 127.0.0.1 (tests/upstreams/fake_openrouter.py)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_openrouter
from tests.upstreams.base import FakeServer, Fault, Recorded
from tests.upstreams.fake_openrouter import OpenRouterState

KEY = "sk-or-v1-FAKE0123456789abcdef0123456789abcdef"
CONFIG = "router: {retries: 0, cooldown_failures: 1000}\nproviders:\n  openrouter: {timeout_s: 1.5}\n"
MODEL = "openrouter/google/gemini-2.5-flash-image"


@pytest.fixture(scope="module")
def or_server() -> Iterator[FakeServer]:
    server = fake_openrouter.start(KEY)
    yield server
    server.stop()


@pytest.fixture
def upstream(or_server: FakeServer) -> FakeServer:
    state(or_server).reset()
    return or_server


def state(server: FakeServer) -> OpenRouterState:
    assert isinstance(server.state, OpenRouterState)
    return server.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, upstream: FakeServer) -> InProcessGateway:
    return inprocess_gateway({"OPENROUTER_API_KEY": KEY, "OPENROUTER_BASE_URL": upstream.url + "/api/v1"}, CONFIG)


def sent(server: FakeServer) -> list[Recorded]:
    return [r for r in state(server).requests if r.path == fake_openrouter.PATH]


def size_of(b64: str | None) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64 or ""))).size


def test_generate_sends_a_chat_completion_with_modalities_and_image_config(gw: InProcessGateway,
                                                                          upstream: FakeServer) -> None:
    raw = gw.openai().images.with_raw_response.generate(model=MODEL, prompt="a lighthouse", size="1792x1024")
    res = raw.parse()
    (rec,) = sent(upstream)
    assert rec.headers["authorization"] == f"Bearer {KEY}"
    assert rec.json == {"model": "google/gemini-2.5-flash-image",
                        "messages": [{"role": "user", "content": "a lighthouse"}],
                        "modalities": ["image", "text"], "stream": False, "image_config": {"aspect_ratio": "16:9"}}
    assert res.data and size_of(res.data[0].b64_json) == (1344, 768)
    assert res.size == "1344x768" and raw.headers["x-gateway-size"] == "1344x768"
    assert res.usage is not None and res.usage.total_tokens == 1301
    gw.assert_secret_absent(KEY)


def test_n_url_format_image_size_and_edits(gw: InProcessGateway, upstream: FakeServer) -> None:
    res = gw.openai().images.generate(model=MODEL, prompt="a cat", n=2, response_format="url",
                                      extra_body={"image_size": "2K", "aspect_ratio": "4:5"})
    assert res.data and len(res.data) == 2 and len(sent(upstream)) == 2
    assert sent(upstream)[0].json["image_config"] == {"aspect_ratio": "4:5", "image_size": "2K"}
    url = res.data[0].url
    assert url and url.startswith(gw.url + "/images/") and gw.http.get(url).content[:4] == b"\x89PNG"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    res = gw.openai().images.edit(model=MODEL, prompt="make it blue", image=("a.png", buf.getvalue(), "image/png"))
    content = sent(upstream)[-1].json["messages"][0]["content"]
    assert content[0] == {"type": "text", "text": "make it blue"}
    assert content[1]["type"] == "image_url" and content[1]["image_url"]["url"].startswith("data:image/png;base64,")
    assert res.data and res.data[0].b64_json


@pytest.mark.parametrize(("fault", "status", "code"), [
    (fake_openrouter.no_credits(), 429, "insufficient_quota"),
    (fake_openrouter.flagged(), 400, "content_policy_violation"),
    (fake_openrouter.rate_limited("4"), 429, "rate_limit_exceeded"),
    (fake_openrouter.model_down(), 502, "upstream_error"),
    (Fault(400, fake_openrouter.or_error(400, "Invalid aspect_ratio")), 400, "invalid_request"),
])
def test_error_answers_map_to_openai_shapes(gw: InProcessGateway, upstream: FakeServer, fault: Fault, status: int,
                                            code: str) -> None:
    state(upstream).fail_next(fault)
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().images.generate(model=MODEL, prompt="x")
    assert e.value.status_code == status
    assert e.value.body["code"] == code  # type: ignore[index]
    if status == 429 and code == "rate_limit_exceeded":
        assert e.value.response.headers["retry-after"] == "4"
    if code == "content_policy_violation":
        assert "violence/graphic" in e.value.body["message"]  # type: ignore[index]
    gw.assert_secret_absent(KEY)


def test_errors_inside_a_200_and_content_filter_and_text_models(gw: InProcessGateway, upstream: FakeServer) -> None:
    state(upstream).mode = "error_in_200"
    with pytest.raises(openai.InternalServerError) as e:
        gw.openai().images.generate(model=MODEL, prompt="x")
    assert "mid-generation" in e.value.body["message"]  # type: ignore[index]
    state(upstream).mode = "content_filter"
    with pytest.raises(openai.BadRequestError) as bad:
        gw.openai().images.generate(model=MODEL, prompt="x")
    assert bad.value.body["code"] == "content_policy_violation"  # type: ignore[index]
    state(upstream).mode = "ok"
    with pytest.raises(openai.InternalServerError) as text:
        gw.openai().images.generate(model="openrouter/openai/gpt-4o-mini", prompt="x")
    assert "no image" in text.value.body["message"] and "only write text" in text.value.body["message"]  # type: ignore[index]


def test_bad_key_and_timeout(inprocess_gateway: InProcessFactory, upstream: FakeServer) -> None:
    gw = inprocess_gateway({"OPENROUTER_API_KEY": "sk-or-v1-WRONG000000000000",
                            "OPENROUTER_BASE_URL": upstream.url + "/api/v1"}, CONFIG)
    with pytest.raises(openai.AuthenticationError):
        gw.openai().images.generate(model=MODEL, prompt="x")
    state(upstream).fail_next(Fault(200, delay_s=3.0, passthrough=True))
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().images.generate(model=MODEL, prompt="x")
    assert e.value.status_code == 504
    gw.assert_secret_absent("sk-or-v1-WRONG000000000000")
