"""The OpenAI provider end to end: official SDK → the gateway app (in-process; a real process where the
socket matters: streaming as events arrive) → fake OpenAI upstream."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from tests.conftest import GatewayFactory, InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer, FakeState, Fault

UPSTREAM_KEY = "sk-upstream-1234567890abcdefWXYZ"
GATEWAY_KEY = "gw-test-key-0987654321"


def _png_bytes(n: int = 32, color: tuple[int, int, int] = (10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (n, n), color).save(buf, "PNG")
    return buf.getvalue()


World = tuple[InProcessGateway, openai.OpenAI, FakeState]


@pytest.fixture
def gw_openai(inprocess_gateway: InProcessFactory, openai_upstream: FakeServer) -> Iterator[World]:
    gw = inprocess_gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1",
                  "GATEWAY_API_KEYS": f"{GATEWAY_KEY},gw-other-key-12345"},
                 config_yaml="router: {retries: 0}\n")  # upstream errors pass through (retries: test_fallback.py)
    yield gw, gw.openai(GATEWAY_KEY), openai_upstream.state
    gw.assert_secret_absent(UPSTREAM_KEY, GATEWAY_KEY)


def test_generate_forwards_every_documented_parameter(gw_openai: World) -> None:
    gw, client, state = gw_openai
    res = client.images.generate(
        model="gpt-image-1", prompt="a sea otter", n=2, size="1024x1536", quality="high", background="opaque",
        moderation="low", output_format="jpeg", output_compression=80, user="u-42")
    gw.remember(res.model_dump_json())
    rec = fake_openai.last_request(state)
    assert rec.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    sent = rec.json
    assert sent == {"model": "gpt-image-1", "prompt": "a sea otter", "n": 2, "size": "1024x1536",
                    "quality": "high", "background": "opaque", "moderation": "low", "output_format": "jpeg",
                    "output_compression": 80, "user": "u-42"}
    assert res.data and len(res.data) == 2 and res.data[0].b64_json != res.data[1].b64_json
    assert res.usage is not None and res.usage.total_tokens > 0
    assert res.output_format == "jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json or ""))).format == "JPEG"


def test_the_size_the_upstream_made_is_echoed_and_in_x_gateway_size(gw_openai: World) -> None:
    gw, client, state = gw_openai
    raw = client.images.with_raw_response.generate(model="gpt-image-1", prompt="a sea otter", size="1536x1024")
    assert raw.headers["x-gateway-size"] == "1536x1024"
    assert raw.parse().size == "1536x1024"


def test_dalle3_style_and_a_hosted_url(gw_openai: World) -> None:
    gw, client, state = gw_openai
    res = client.images.generate(model="dall-e-3", prompt="a castle", style="natural", quality="hd",
                                 response_format="url")
    sent = fake_openai.last_request(state).json
    # The URL the caller gets is the gateway's own: DALL·E is asked for base64, which is then hosted.
    assert sent["style"] == "natural" and sent["quality"] == "hd" and sent["response_format"] == "b64_json"
    assert res.data and res.data[0].url and res.data[0].revised_prompt
    assert res.data[0].url.startswith(gw.url + "/images/")
    assert gw.http.get(res.data[0].url).status_code == 200


def test_base64_upstream_hosted_as_url(gw_openai: World) -> None:
    gw, client, state = gw_openai
    res = client.images.generate(model="gpt-image-1", prompt="otter", response_format="url", size="1024x1024")
    # GPT-image models reject response_format upstream: the gateway must not forward it...
    assert "response_format" not in fake_openai.last_request(state).json
    # ...and hosts the base64 answer itself, at an absolute URL it serves.
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/")
    got = gw.http.get(url)
    assert got.status_code == 200 and got.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((gw.data_dir / "images").iterdir())) == 1


def test_public_base_url_is_used_for_hosted_images(inprocess_gateway: InProcessFactory,
                                                   openai_upstream: FakeServer) -> None:
    gw = inprocess_gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1",
                  "PUBLIC_BASE_URL": "https://img.example.test/gw/"})
    res = gw.openai().images.generate(model="gpt-image-1", prompt="otter", response_format="url")
    assert res.data and res.data[0].url and res.data[0].url.startswith("https://img.example.test/gw/images/")
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_url_upstream_downloaded_for_b64_and_format_converted(inprocess_gateway: InProcessFactory,
                                                              openai_upstream: FakeServer) -> None:
    # A YAML route that lets the upstream answer with a URL (dall-e-2 default) while the caller wants base64.
    yaml = """
routes:
  - name: dalle-url
    provider: openai
    upstream_model: dall-e-2
    native_response_format: false
    defaults: {size: 256x256}
    aliases: [dalle-small]
"""
    gw = inprocess_gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1"},
                           config_yaml=yaml)
    res = gw.openai().images.generate(model="dalle-small", prompt="fox", response_format="b64_json",
                                      output_format="webp")
    sent = fake_openai.last_request(openai_upstream.state).json
    assert sent["model"] == "dall-e-2" and sent["size"] == "256x256"
    assert "response_format" not in sent and "output_format" not in sent
    assert openai_upstream.state.count("/files/") == 1  # the gateway downloaded the upstream URL
    raw = base64.b64decode(res.data[0].b64_json or "") if res.data else b""
    assert Image.open(io.BytesIO(raw)).format == "WEBP"
    assert res.output_format == "webp"
    gw.assert_secret_absent(UPSTREAM_KEY)


def test_stream_relays_events_as_they_arrive(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    # A real process: in-process responses are whole, and the point here is that they are not.
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1"})
    client, state = openai.OpenAI(base_url=gw.base_url, api_key="unused", max_retries=0), openai_upstream.state
    state.stream_gap_s = 0.7
    arrivals: list[tuple[float, str]] = []
    stream = client.images.generate(model="gpt-image-1", prompt="otter", stream=True, partial_images=2)
    for ev in stream:
        arrivals.append((time.monotonic(), ev.type))
    types = [t for _, t in arrivals]
    assert types == ["image_generation.partial_image", "image_generation.partial_image",
                     "image_generation.completed"]
    assert fake_openai.last_request(state).json["stream"] is True
    # Not buffered: the first event reached the client well before the last one was sent.
    assert arrivals[-1][0] - arrivals[0][0] > 0.7


def test_edit_with_one_file_several_files_and_mask(gw_openai: World) -> None:
    gw, client, state = gw_openai
    a, b = _png_bytes(color=(255, 0, 0)), _png_bytes(color=(0, 0, 255))
    res = client.images.edit(model="gpt-image-1", image=("a.png", a, "image/png"), prompt="add a hat")
    rec = fake_openai.last_request(state)
    assert rec.files["image"][0][2] == a and rec.form["prompt"] == ["add a hat"]
    assert res.data and res.data[0].b64_json

    res = client.images.edit(model="gpt-image-1", image=[("a.png", a, "image/png"), ("b.png", b, "image/png")],
                             mask=("m.png", _png_bytes(), "image/png"), prompt="merge", n=2, input_fidelity="high")
    rec = fake_openai.last_request(state)
    assert [f[2] for f in rec.files["image[]"]] == [a, b]
    assert "mask" in rec.files
    assert rec.form["n"] == ["2"] and rec.form["input_fidelity"] == ["high"]
    assert res.data and len(res.data) == 2


def test_edit_json_form_with_image_urls(gw_openai: World) -> None:
    gw, client, state = gw_openai
    data_url = "data:image/png;base64," + base64.b64encode(_png_bytes()).decode()
    r = gw.http.post("/v1/images/edits", headers={"Authorization": f"Bearer {GATEWAY_KEY}"},
                     json={"model": "gpt-image-1", "prompt": "watercolor", "images": [{"image_url": data_url}]})
    assert r.status_code == 200, r.text
    sent = fake_openai.last_request(state).json
    assert sent["images"] == [{"image_url": data_url}]


def test_variation(gw_openai: World) -> None:
    gw, client, state = gw_openai
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        res = client.images.create_variation(image=("v.png", _png_bytes(), "image/png"), n=2, size="256x256",
                                             model="dall-e-2", response_format="b64_json")
    rec = fake_openai.last_request(state)
    assert rec.path.endswith("/variations") and "image" in rec.files and rec.form["n"] == ["2"]
    assert res.data and len(res.data) == 2


@pytest.mark.parametrize(
    ("fault", "exc", "status", "code"),
    [
        (fake_openai.rate_limited("7"), openai.RateLimitError, 429, "rate_limit_exceeded"),
        (fake_openai.server_error(), openai.InternalServerError, 500, None),
        (fake_openai.moderation_blocked(), openai.BadRequestError, 400, "moderation_blocked"),
        (fake_openai.invalid_key(), openai.AuthenticationError, 401, "invalid_api_key"),
    ],
)
def test_upstream_errors_keep_status_and_shape(gw_openai: World, fault: Fault, exc: type[openai.APIStatusError],
                                               status: int, code: str | None) -> None:
    gw, client, state = gw_openai
    state.fail_next(fault)
    with pytest.raises(exc) as info:
        client.images.generate(model="gpt-image-1", prompt="otter")
    err = info.value
    assert err.status_code == status
    assert err.code == code
    body = err.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    gw.remember(err.response.text)
    if status == 429:
        assert err.response.headers["retry-after"] == "7"


def test_upstream_timeout_and_unreachable(inprocess_gateway: InProcessFactory, openai_upstream: FakeServer) -> None:
    yaml = "providers:\n  openai: {timeout_s: 0.5}\n"
    gw = inprocess_gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1"},
                           config_yaml=yaml)
    openai_upstream.state.fail_next(fake_openai.slow(3))
    r = gw.http.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"

    from tests.gateway import free_port

    dead = inprocess_gateway({"OPENAI_API_KEY": UPSTREAM_KEY,
                              "OPENAI_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"})
    r2 = dead.http.post("/v1/images/generations", json={"model": "gpt-image-1", "prompt": "x"})
    assert r2.status_code == 502 and r2.json()["error"]["code"] == "upstream_unreachable"
    for g in (gw, dead):
        g.remember(r.text, r2.text)
        g.assert_secret_absent(UPSTREAM_KEY)


def test_edit_stream_uses_image_edit_events(gw_openai: World) -> None:
    gw, client, state = gw_openai
    stream = client.images.edit(model="gpt-image-1", image=("a.png", _png_bytes(), "image/png"), prompt="hat",
                                stream=True, partial_images=1)
    types = [ev.type for ev in stream]
    assert types == ["image_edit.partial_image", "image_edit.completed"]
    assert fake_openai.last_request(state).form["stream"] == ["true"]


def test_demo_stream_for_a_provider_without_native_stream(gw_openai: World) -> None:
    gw, client, state = gw_openai
    events = list(client.images.generate(model="demo", prompt="fox", size="64x64", n=2, stream=True))
    assert [e.type for e in events] == ["image_generation.completed"] * 2
    assert all(e.b64_json for e in events)
