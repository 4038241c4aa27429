"""Google (Gemini image models and Imagen 4) through the Images API: the official SDK → the gateway app
(in-process) → the fake Gemini API on 127.0.0.1 (tests/upstreams/fake_google.py)."""

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
from tests.upstreams import fake_google
from tests.upstreams.base import FakeServer, Fault, Recorded
from tests.upstreams.fake_google import GoogleState

KEY = "AIzaSy-FAKE-gemini-key-0123456789abcdef"
CONFIG = "router: {retries: 0, cooldown_failures: 1000}\nproviders:\n  google: {timeout_s: 1.5}\n"


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeServer]:
    server = fake_google.start(KEY)
    yield server
    server.stop()


@pytest.fixture
def google(google_server: FakeServer) -> FakeServer:
    state(google_server).reset()
    return google_server


def state(server: FakeServer) -> GoogleState:
    assert isinstance(server.state, GoogleState)
    return server.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, google: FakeServer) -> InProcessGateway:
    return inprocess_gateway({"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": google.url}, CONFIG)


def sent(server: FakeServer) -> list[Recorded]:
    return [r for r in state(server).requests if r.path.startswith("/v1beta/models/")]


def size_of(b64: str | None) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64 or ""))).size


def test_gemini_generate_sends_generate_content_and_returns_the_image(gw: InProcessGateway,
                                                                      google: FakeServer) -> None:
    raw = gw.openai().images.with_raw_response.generate(model="gemini-2.5-flash-image", prompt="a red fox",
                                                        size="1536x1024")
    res = raw.parse()
    (rec,) = sent(google)
    assert rec.path == "/v1beta/models/gemini-2.5-flash-image:generateContent"
    assert rec.headers["x-goog-api-key"] == KEY
    assert rec.json == {"contents": [{"role": "user", "parts": [{"text": "a red fox"}]}],
                        "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                                             "imageConfig": {"aspectRatio": "3:2"}}}
    assert res.data and size_of(res.data[0].b64_json) == (1248, 832)
    assert res.size == "1248x832" and raw.headers["x-gateway-size"] == "1248x832"
    assert res.usage is not None and res.usage.total_tokens == 1302
    gw.assert_secret_absent(KEY)


def test_alias_and_google_api_key_alias(inprocess_gateway: InProcessFactory, google: FakeServer) -> None:
    gw = inprocess_gateway({"GOOGLE_API_KEY": KEY, "GEMINI_BASE_URL": google.url}, CONFIG)
    res = gw.openai().images.generate(model="nano-banana-google", prompt="a kiwi", extra_body={"aspect_ratio": "21:9"})
    assert res.data and size_of(res.data[0].b64_json) == (1536, 672)
    assert sent(google)[0].json["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9"}
    gw.assert_secret_absent(KEY)


def test_gemini_3_pro_takes_a_tier_and_skips_the_thought_drafts(gw: InProcessGateway, google: FakeServer) -> None:
    res = gw.openai().images.generate(model="gemini-3-pro-image-preview", prompt="a map", size="2048x2048")
    assert sent(google)[0].json["generationConfig"]["imageConfig"] == {"aspectRatio": "1:1", "imageSize": "2K"}
    assert res.data and size_of(res.data[0].b64_json) == (2048, 2048)  # the final image, not the 32x32 draft
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.generate(model="gemini-3-pro-image-preview", prompt="a map", extra_body={"image_size": "8K"})
    assert e.value.body["param"] == "image_size"  # type: ignore[index]


def test_n_is_parallel_calls_for_gemini_and_sample_count_for_imagen(gw: InProcessGateway, google: FakeServer) -> None:
    res = gw.openai().images.generate(model="gemini-2.5-flash-image", prompt="a cat", n=2)
    assert res.data and len(res.data) == 2 and len(sent(google)) == 2
    state(google).reset()
    res = gw.openai().images.generate(model="imagen-4.0-generate-001", prompt="a cat", n=3, size="1280x960")
    (rec,) = sent(google)
    assert rec.path == "/v1beta/models/imagen-4.0-generate-001:predict"
    assert rec.json == {"instances": [{"prompt": "a cat"}],
                        "parameters": {"sampleCount": 3, "includeRaiReason": True, "aspectRatio": "4:3",
                                       "imageSize": "1K"}}
    assert res.data and len(res.data) == 3 and len({d.b64_json for d in res.data}) == 3
    assert res.size == "1280x896"
    with pytest.raises(openai.BadRequestError):  # more than Imagen's 4
        gw.openai().images.generate(model="imagen-4.0-generate-001", prompt="a cat", n=5)


def test_imagen_fast_gets_no_image_size_and_ratios_are_fitted(gw: InProcessGateway, google: FakeServer) -> None:
    res = gw.openai().images.generate(model="imagen-4.0-fast-generate-001", prompt="a dog", size="1024x1792")
    assert sent(google)[0].json["parameters"] == {"sampleCount": 1, "includeRaiReason": True, "aspectRatio": "9:16"}
    assert res.size == "768x1408"


def test_url_and_b64_response_formats(gw: InProcessGateway, google: FakeServer) -> None:
    res = gw.openai().images.generate(model="imagen-4.0-ultra-generate-001", prompt="a hat", response_format="url")
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/")
    got = gw.http.get(url)
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    res = gw.openai().images.generate(model="imagen-4.0-ultra-generate-001", prompt="a hat",
                                      response_format="b64_json")
    assert res.data and res.data[0].b64_json and size_of(res.data[0].b64_json) == (1024, 1024)


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, "PNG")
    return buf.getvalue()


def test_edits_send_the_images_inline(gw: InProcessGateway, google: FakeServer) -> None:
    a, b = _png((255, 0, 0)), _png((0, 0, 255))
    res = gw.openai().images.edit(model="gemini-2.5-flash-image", prompt="put them side by side",
                                  image=[("a.png", a, "application/octet-stream"), ("b.png", b, "image/png")])
    assert res.data and res.data[0].b64_json
    parts = sent(google)[0].json["contents"][0]["parts"]
    assert parts[0] == {"text": "put them side by side"}
    assert parts[1:] == [{"inline_data": {"mime_type": "image/png", "data": base64.b64encode(a).decode()}},
                         {"inline_data": {"mime_type": "image/png", "data": base64.b64encode(b).decode()}}]
    with pytest.raises(openai.BadRequestError) as e:  # Imagen only generates
        gw.openai().images.edit(model="imagen-4.0-generate-001", prompt="x", image=("a.png", a, "image/png"))
    assert e.value.body["code"] == "unsupported_operation"  # type: ignore[index]


@pytest.mark.parametrize(("model", "mode"), [
    ("gemini-2.5-flash-image", "block_prompt"), ("gemini-2.5-flash-image", "finish_safety"),
    ("imagen-4.0-generate-001", "imagen_filtered")])
def test_safety_blocks_are_content_policy_violations(gw: InProcessGateway, google: FakeServer, model: str,
                                                     mode: str) -> None:
    state(google).mode = mode
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.generate(model=model, prompt="something bad")
    assert e.value.status_code == 400
    assert e.value.body["code"] == "content_policy_violation"  # type: ignore[index]
    assert "safety" in e.value.body["message"].lower()  # type: ignore[index]
    gw.assert_secret_absent(KEY)


def test_a_partly_filtered_imagen_batch_returns_the_rest(gw: InProcessGateway, google: FakeServer) -> None:
    state(google).mode = "imagen_partial"
    res = gw.openai().images.generate(model="imagen-4.0-generate-001", prompt="two cats", n=2)
    assert res.data and len(res.data) == 1


def test_a_text_only_answer_is_a_clear_502(gw: InProcessGateway, google: FakeServer) -> None:
    state(google).mode = "text_only"
    with pytest.raises(openai.InternalServerError) as e:
        gw.openai().images.generate(model="gemini-2.5-flash-image", prompt="a cat")
    assert e.value.status_code == 502 and "here is a description" in str(e.value.body)


def test_upstream_errors_map_to_openai_shapes(inprocess_gateway: InProcessFactory, google: FakeServer) -> None:
    bad = inprocess_gateway({"GEMINI_API_KEY": "AIzaSy-WRONG-key-00000000000", "GEMINI_BASE_URL": google.url}, CONFIG)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.openai().images.generate(model="gemini-2.5-flash-image", prompt="x")
    assert "API key not valid" in auth.value.body["message"]  # type: ignore[index]
    bad.assert_secret_absent("AIzaSy-WRONG-key-00000000000")

    gw = inprocess_gateway({"GEMINI_API_KEY": KEY, "GEMINI_BASE_URL": google.url}, CONFIG)
    client = gw.openai()
    state(google).fail_next(fake_google.quota_exhausted(7))
    with pytest.raises(openai.RateLimitError) as rl:
        client.images.generate(model="gemini-2.5-flash-image", prompt="x")
    assert rl.value.response.headers["retry-after"] == "7"
    assert rl.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    state(google).fail_next(fake_google.internal())
    with pytest.raises(openai.InternalServerError) as ise:
        client.images.generate(model="imagen-4.0-generate-001", prompt="x")
    assert ise.value.status_code == 502 and "internal error" in ise.value.body["message"]  # type: ignore[index]
    state(google).fail_next(Fault(400, fake_google.google_error(400, "FAILED_PRECONDITION",
                                                                "User location is not supported for the API use.")))
    with pytest.raises(openai.BadRequestError) as inv:
        client.images.generate(model="gemini-2.5-flash-image", prompt="x", extra_body={"aspectRatio": "7:3"})
    assert inv.value.body["code"] == "failed_precondition"  # type: ignore[index]
    assert sent(google)[-1].json["generationConfig"]["imageConfig"] == {"aspectRatio": "21:9"}  # fitted
    with pytest.raises(openai.NotFoundError) as nf:  # a direct name the upstream does not know
        client.images.generate(model="google/gemini-0-nope", prompt="x")
    assert nf.value.body["code"] == "model_not_found"  # type: ignore[index]
    state(google).fail_next(Fault(200, delay_s=3.0, passthrough=True))
    with pytest.raises(openai.APIStatusError) as slow:
        client.images.generate(model="gemini-2.5-flash-image", prompt="x")
    assert slow.value.status_code == 504
    gw.assert_secret_absent(KEY)


def test_stream_true_is_emulated(gw: InProcessGateway, google: FakeServer) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "gemini-2.5-flash-image", "prompt": "a kite",
                                                     "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")]
    assert [e["type"] for e in events] == ["image_generation.completed"]
    assert size_of(events[0]["b64_json"]) == (1024, 1024)
    gw.assert_secret_absent(KEY)
