"""Self-test of the fake OpenAI Images upstream, driven by the official `openai` SDK."""

from __future__ import annotations

import base64
import io
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer, FakeState


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    state = FakeState()
    state.stream_gap_s = 0.02
    with FakeServer(fake_openai.build_app(state), state) as srv:
        yield srv


@pytest.fixture()
def state(server: FakeServer) -> FakeState:
    st = server.state
    with st.lock:
        st.requests.clear()
        st.faults.clear()
    st.delay_s = 0.0
    return st


@pytest.fixture()
def client(server: FakeServer, state: FakeState) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test-123", max_retries=0, timeout=10)


def png(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def raw_post(url: str, body: dict[str, Any], key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def small_png(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (8, 8), color).save(buf, "PNG")
    return buf.getvalue()


def test_generate_url_for_dalle(client: openai.OpenAI, state: FakeState) -> None:
    res = client.images.generate(model="dall-e-3", prompt="a red fox", size="1024x1792")
    assert res.data and res.data[0].url and res.data[0].b64_json is None
    assert res.data[0].revised_prompt
    img = png(fetch(res.data[0].url))
    assert img.format == "PNG" and img.size == (256, 256)  # each side capped at MAX_SIDE
    gen = fake_openai.last_request(state)
    assert gen.json["size"] == "1024x1792" and gen.json["model"] == "dall-e-3"
    assert gen.headers["authorization"] == "Bearer sk-test-123"
    assert state.requests[-1].path.startswith("/files/")  # the download is recorded too


def test_generate_b64_gpt_image(client: openai.OpenAI, state: FakeState) -> None:
    res = client.images.generate(model="gpt-image-1", prompt="otter", size="64x32", quality="high")
    assert res.data and res.data[0].b64_json and res.data[0].url is None
    assert png(base64.b64decode(res.data[0].b64_json)).size == (64, 32)
    assert res.usage is not None and res.usage.total_tokens > 0
    assert (res.size, res.quality, res.output_format, res.background) == ("64x32", "high", "png", "opaque")
    # an explicit response_format wins over the model default
    res = client.images.generate(model="gpt-image-1", prompt="otter", response_format="url", size="32x32")
    assert res.data and res.data[0].url
    assert png(fetch(res.data[0].url)).size == (32, 32)


def test_output_format_jpeg(client: openai.OpenAI) -> None:
    res = client.images.generate(model="gpt-image-1", prompt="x", size="16x16", output_format="jpeg")
    assert res.output_format == "jpeg" and res.data and res.data[0].b64_json
    assert png(base64.b64decode(res.data[0].b64_json)).format == "JPEG"


def test_n_gives_distinct_images(client: openai.OpenAI, state: FakeState) -> None:
    res = client.images.generate(model="gpt-image-1", prompt="three cats", n=3, size="16x16")
    assert res.data and len(res.data) == 3
    pixels = {png(base64.b64decode(d.b64_json or "")).getpixel((0, 0)) for d in res.data}
    assert len(pixels) == 3
    assert state.requests[-1].json["n"] == 3
    assert state.requests[-1].extra["n"] == 3


def test_stream_generation(client: openai.OpenAI, state: FakeState) -> None:
    stream = client.images.generate(
        model="gpt-image-1", prompt="stream me", stream=True, partial_images=2, size="16x16"
    )
    events = list(stream)
    assert [e.type for e in events] == [
        "image_generation.partial_image",
        "image_generation.partial_image",
        "image_generation.completed",
    ]
    assert [getattr(e, "partial_image_index", None) for e in events[:2]] == [0, 1]
    final = events[-1]
    assert final.type == "image_generation.completed" and final.usage.total_tokens > 0
    assert png(base64.b64decode(final.b64_json)).size == (16, 16)
    assert state.requests[-1].json["stream"] is True


def test_stream_events_arrive_spaced(server: FakeServer, state: FakeState) -> None:
    state.stream_gap_s = 0.1
    try:
        req = urllib.request.Request(
            server.url + "/v1/images/generations",
            data=json.dumps(
                {"model": "gpt-image-1", "prompt": "p", "stream": True, "partial_images": 1}
            ).encode(),
            headers={"Content-Type": "application/json", "Authorization": "Bearer sk-x"},
        )
        stamps: list[float] = []
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            lines = []
            for line in resp:
                if line.startswith(b"event:"):
                    stamps.append(time.monotonic())
                lines.append(line)
        assert len(stamps) == 2 and stamps[1] - stamps[0] >= 0.08
        assert not any(b"[DONE]" in line for line in lines)
    finally:
        state.stream_gap_s = 0.02


def test_edit_one_file(client: openai.OpenAI, state: FakeState) -> None:
    res = client.images.edit(
        model="gpt-image-1", image=("a.png", small_png(), "image/png"), prompt="hat", n=2
    )
    assert res.data and len(res.data) == 2
    rec = state.requests[-1]
    assert [f[0] for f in rec.files["image"]] == ["a.png"]
    assert rec.form["n"] == ["2"] and rec.form["prompt"] == ["hat"]
    assert rec.extra["image_count"] == 1 and rec.extra["has_mask"] is False


def test_edit_two_files_and_mask(client: openai.OpenAI, state: FakeState) -> None:
    res = client.images.edit(
        model="gpt-image-1",
        image=[("a.png", small_png("red"), "image/png"), ("b.png", small_png("blue"), "image/png")],
        mask=("m.png", small_png("white"), "image/png"),
        prompt="merge",
    )
    assert res.data and len(res.data) == 1
    rec = state.requests[-1]
    assert [f[0] for f in rec.files["image[]"]] == ["a.png", "b.png"]
    assert rec.files["mask"][0][2] == small_png("white")
    assert rec.extra["image_count"] == 2 and rec.extra["has_mask"] is True


def test_edit_stream_multipart(client: openai.OpenAI, state: FakeState) -> None:
    events = list(
        client.images.edit(model="gpt-image-1", image=small_png(), prompt="s", stream=True, partial_images=1)
    )
    assert [e.type for e in events] == ["image_edit.partial_image", "image_edit.completed"]
    assert state.requests[-1].form["stream"] == ["true"]


def test_edit_json_images(server: FakeServer, state: FakeState) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(small_png()).decode()
    body = {
        "model": "gpt-image-1",
        "prompt": "p",
        "images": [{"image_url": data_url}, {"image_url": "https://example.com/x.png"}],
    }
    status, answer = raw_post(server.url + "/v1/images/edits", body, "sk-x")
    assert status == 200 and len(answer["data"]) == 1
    assert state.requests[-1].extra["image_sources"] == ["data", "url"]
    status, answer = raw_post(
        server.url + "/v1/images/edits", {"model": "gpt-image-1", "prompt": "p"}, "sk-x"
    )
    assert status == 400 and answer["error"]["param"] == "images"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_variation(client: openai.OpenAI, state: FakeState) -> None:
    res = client.images.create_variation(image=("v.png", small_png(), "image/png"), n=2, size="256x256")
    assert res.data and len(res.data) == 2 and all(d.url for d in res.data)
    assert state.requests[-1].path == "/v1/images/variations"
    assert state.requests[-1].extra["image_count"] == 1


def test_models(client: openai.OpenAI) -> None:
    assert "gpt-image-1" in [m.id for m in client.models.list()]


def test_rate_limited(client: openai.OpenAI, state: FakeState) -> None:
    state.fail_next(fake_openai.rate_limited("7"))
    with pytest.raises(openai.RateLimitError) as info:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert info.value.code == "rate_limit_exceeded"
    assert info.value.response.headers["retry-after"] == "7"
    # the fault was used up: the next call succeeds
    assert client.images.generate(model="gpt-image-1", prompt="x", size="8x8").data


def test_other_faults(client: openai.OpenAI, state: FakeState) -> None:
    state.fail_next(fake_openai.server_error(), fake_openai.moderation_blocked(), fake_openai.invalid_key())
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="gpt-image-1", prompt="x")
    with pytest.raises(openai.BadRequestError) as bad:
        client.images.generate(model="gpt-image-1", prompt="x")
    assert bad.value.code == "moderation_blocked" and bad.value.type == "image_generation_user_error"
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(model="gpt-image-1", prompt="x")


def test_slow_falls_through(client: openai.OpenAI, state: FakeState) -> None:
    state.fail_next(fake_openai.slow(0.2))
    t0 = time.monotonic()
    res = client.images.generate(model="gpt-image-1", prompt="x", size="8x8")
    assert time.monotonic() - t0 >= 0.2 and res.data


def test_auth(server: FakeServer, state: FakeState) -> None:
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.images.generate(model="gpt-image-1", prompt="x")
    assert info.value.code == "invalid_api_key"
    assert "sk-bad" not in info.value.response.text
    status, answer = raw_post(server.url + "/v1/images/generations", {"prompt": "x"})
    assert status == 401 and answer["error"]["code"] == "invalid_api_key"
    assert answer["error"]["type"] == "invalid_request_error" and answer["error"]["param"] is None


def test_validation(server: FakeServer) -> None:
    status, answer = raw_post(server.url + "/v1/images/generations", {"model": "gpt-image-1"}, "sk-x")
    assert status == 400 and answer["error"]["param"] == "prompt"
    status, answer = raw_post(server.url + "/v1/images/generations", {"prompt": "x", "n": 11}, "sk-x")
    assert status == 400 and answer["error"]["param"] == "n"


def test_start_helper() -> None:
    srv = fake_openai.start()
    try:
        status, answer = raw_post(srv.url + "/v1/images/generations", {"prompt": "x", "size": "8x8"}, "sk-x")
        assert status == 200 and answer["data"][0]["url"].startswith(srv.url + "/files/")
    finally:
        srv.stop()
