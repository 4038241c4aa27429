"""Automatic1111 / Forge web UI API through the Images API (official SDK, raw HTTP), against the fake on
127.0.0.1: txt2img and img2img bodies, n with the grid skipped, sizes, url and b64_json, progress
with live previews as partial images, the web UI's error bodies, basic auth kept secret, readiness."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from image_gateway.cli import main as cli_main
from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_a1111
from tests.upstreams.base import FakeServer, Fault
from tests.upstreams.fake_a1111 import A1111State
from tests.waits import wait_until

AUTH = "painter:s3cret-Basic-Pass-91f0"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
providers:
  a1111: {progress_interval_s: 0.02}
routes:
  - {name: sdxl, provider: a1111, checkpoint: "sd_xl_base_1.0.safetensors [31e35c80fc]", sampler_name: "DPM++ 2M"}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    s = fake_a1111.start()
    yield s
    s.stop()


@pytest.fixture
def a1111(server: FakeServer) -> FakeServer:
    st(server).reset()
    return server


def st(server: FakeServer) -> A1111State:
    assert isinstance(server.state, A1111State)
    return server.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, a1111: FakeServer) -> InProcessGateway:
    return inprocess_gateway(env={"A1111_BASE_URL": a1111.url, "PROBE_INTERVAL_S": "0.1"}, config_yaml=CONFIG)


def size_of(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


def test_generate_sends_txt2img_and_returns_the_images(gw: InProcessGateway, a1111: FakeServer) -> None:
    res = gw.openai().images.generate(model="a1111", prompt="a lighthouse at dusk", size="1536x1024",
                                      response_format="b64_json",
                                      extra_body={"seed": 42, "steps": 3, "negative_prompt": "blurry", "cfg": 5})
    (body,) = st(a1111).bodies()
    assert body["prompt"] == "a lighthouse at dusk" and body["negative_prompt"] == "blurry"
    assert (body["width"], body["height"], body["steps"], body["cfg_scale"], body["seed"]) == (1536, 1024, 3, 5, 42)
    assert body["batch_size"] == 1 and "override_settings" not in body  # the loaded checkpoint
    assert res.size == "1536x1024" and res.data and res.data[0].b64_json
    assert size_of(res.data[0].b64_json) == (192, 128)  # the fake draws at 1/8 scale


def test_n_skips_the_grid_and_url_is_hosted(gw: InProcessGateway, a1111: FakeServer) -> None:
    res = gw.openai().images.generate(model="a1111", prompt="three cats", n=3, size="512x768", response_format="url",
                                      extra_body={"steps": 2})
    assert st(a1111).bodies()[0]["batch_size"] == 3
    assert res.data and len(res.data) == 3
    for d in res.data:
        assert d.url and d.url.startswith(gw.url + "/images/")
        r = gw.http.get(d.url)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (64, 96)  # not the 2x grid


def test_ratio_and_odd_sizes_snap_to_multiples_of_8(gw: InProcessGateway, a1111: FakeServer) -> None:
    gw.openai().images.generate(model="a1111", prompt="x", size="1000x701", extra_body={"steps": 1})
    gw.openai().images.generate(model="a1111", prompt="x", extra_body={"aspect_ratio": "16:9", "steps": 1})
    (a, b) = st(a1111).bodies()
    assert (a["width"], a["height"]) == (1000, 704) and (b["width"], b["height"]) == (1024, 576)


def test_route_checkpoint_goes_to_override_settings(gw: InProcessGateway, a1111: FakeServer) -> None:
    gw.openai().images.generate(model="sdxl", prompt="a castle", extra_body={"steps": 1})
    (body,) = st(a1111).bodies()
    assert body["override_settings"] == {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors [31e35c80fc]"}
    assert body["sampler_name"] == "DPM++ 2M"


def _png(color: tuple[int, int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (32, 32), color).save(buf, "PNG")
    return buf.getvalue()


def test_edit_with_mask_sends_img2img(gw: InProcessGateway, a1111: FakeServer) -> None:
    image, mask = _png((255, 0, 0)), _png((255, 255, 255))
    res = gw.openai().images.edit(model="a1111", prompt="make it blue", image=("in.png", image, "image/png"),
                                  mask=("mask.png", mask, "image/png"), response_format="b64_json",
                                  extra_body={"steps": "2", "denoising_strength": "0.4"})
    (body,) = st(a1111).bodies("/sdapi/v1/img2img")
    assert base64.b64decode(body["init_images"][0]) == image and base64.b64decode(body["mask"]) == mask
    assert body["denoising_strength"] == 0.4 and "width" not in body  # the init image's own size
    assert res.data and res.data[0].b64_json


def test_stream_relays_progress_and_live_previews(gw: InProcessGateway, a1111: FakeServer) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "a1111", "prompt": "a comet", "stream": True,
                                                      "partial_images": 2, "steps": 15})
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    kinds = [e["type"] for e in events]
    assert kinds.count("image_generation.partial_image") == 2 and kinds[-1] == "image_generation.completed"
    assert st(a1111).progress_polls >= 2
    partial = events[0]
    assert partial["b64_json"] and 0 <= partial["progress"] < 100


@pytest.mark.parametrize(("fault", "status", "code"), [
    (Fault(422, {"detail": [{"loc": ["body", "width"], "msg": "value is not a valid integer",
                             "type": "type_error.integer"}]}), 400, "invalid_value"),
    (Fault(500, {"error": "OutOfMemoryError", "detail": "", "body": "",
                 "errors": "CUDA out of memory. Tried to allocate 2.00 GiB"}), 502, "upstream_error"),
    (Fault(429, {"detail": "busy"}, headers={"Retry-After": "7"}), 429, "rate_limit_exceeded"),
])
def test_upstream_errors_map_to_openai_errors(gw: InProcessGateway, a1111: FakeServer, fault: Fault, status: int,
                                              code: str) -> None:
    st(a1111).fail_next(fault)
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().images.generate(model="a1111", prompt="x")
    assert e.value.status_code == status
    err: Any = e.value.body
    assert err["code"] == code and err["message"]
    if status == 502:
        assert "OutOfMemoryError" in err["message"] and "CUDA out of memory" in err["message"]
    if status == 429:
        assert e.value.response.headers["retry-after"] == "7"


def test_unknown_sampler_is_the_callers_mistake(gw: InProcessGateway, a1111: FakeServer) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.generate(model="a1111", prompt="x", extra_body={"sampler_name": "Bogus"})
    assert "Sampler not found" in str(e.value)


def test_timeout_and_unreachable(inprocess_gateway: InProcessFactory, a1111: FakeServer) -> None:
    gw = inprocess_gateway(env={"A1111_BASE_URL": a1111.url},
                           config_yaml="router: {retries: 0}\nproviders:\n  a1111: {timeout_s: 0.3}\n")
    st(a1111).fail_next(Fault(delay_s=2.0, passthrough=True))
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().images.generate(model="a1111", prompt="x")
    assert e.value.status_code == 504
    down = inprocess_gateway(env={"A1111_BASE_URL": "http://127.0.0.1:9"}, config_yaml="router: {retries: 0}\n")
    with pytest.raises(openai.APIStatusError) as e:
        down.openai().images.generate(model="a1111", prompt="x")
    assert e.value.status_code == 502 and "unreachable" in str(e.value)


def test_basic_auth_works_and_never_leaks(inprocess_gateway: InProcessFactory, a1111: FakeServer) -> None:
    st(a1111).auth = AUTH
    gw = inprocess_gateway(env={"A1111_BASE_URL": a1111.url, "A1111_AUTH": AUTH, "ADMIN_API_KEY": "gw-admin-1234567"},
                           config_yaml="router: {retries: 0}\n")
    res = gw.openai().images.generate(model="a1111", prompt="x", extra_body={"steps": 1})
    assert res.data
    sent = st(a1111).requests[-1].headers["authorization"]
    assert sent == "Basic " + base64.b64encode(AUTH.encode()).decode()
    gw.remember(gw.http.get("/ready", headers={"Authorization": "Bearer gw-admin-1234567"}).text)
    gw.remember(gw.http.get("/v1/models").text)
    st(a1111).auth = "painter:another-pass"  # the web UI's password changed: a 401, the key not echoed
    with pytest.raises(openai.AuthenticationError) as e:
        gw.openai().images.generate(model="a1111", prompt="x")
    assert "Incorrect username or password" in str(e.value)
    gw.assert_secret_absent(AUTH, AUTH.split(":")[1], base64.b64encode(AUTH.encode()).decode())


def test_ready_and_models_follow_the_probe(inprocess_gateway: InProcessFactory, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    server = fake_a1111.start()
    admin = {"Authorization": "Bearer gw-admin-1234567"}
    try:
        gw = inprocess_gateway(env={"A1111_BASE_URL": server.url, "PROBE_INTERVAL_S": "0.05",
                                    "ADMIN_API_KEY": "gw-admin-1234567"})
        assert "a1111" in gw.http.get("/ready", headers=admin).json()["providers"]  # probed at start-up
        monkeypatch.setenv("A1111_BASE_URL", server.url)
        monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
        cli_main(["models"])
        line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("a1111 "))
        assert "[ready]" in line
    finally:
        server.stop()
    def gone() -> dict[str, Any] | None:
        b: dict[str, Any] = gw.http.get("/ready", headers=admin).json()
        return b if "a1111" in b["unreachable"] else None

    ready = wait_until(gone, timeout=10, what="the probe to see the web UI gone")
    assert ready is not None
    assert "a1111" not in ready["providers"]
    cli_main(["models"])
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("a1111 "))
    assert "unreachable" in line
