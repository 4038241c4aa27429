"""Zero keys: the built-in demo provider, through raw HTTP and the official SDK."""

from __future__ import annotations

import base64
import io

import httpx
import openai
from PIL import Image, ImageChops, ImageStat

from tests.conftest import GatewayFactory


def _png(b64: str) -> Image.Image:
    raw = base64.b64decode(b64)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(raw)).convert("RGB")


def test_curl_example_returns_a_real_png(gateway: GatewayFactory) -> None:
    gw = gateway()
    r = httpx.post(gw.url + "/v1/images/generations", json={"model": "demo", "prompt": "a red fox"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-provider"] == "demo"
    img = _png(r.json()["data"][0]["b64_json"])
    assert img.size == (1024, 1024)


def test_demo_is_deterministic_per_prompt_and_seed_and_differs_across_prompts(gateway: GatewayFactory) -> None:
    gw = gateway()

    def gen(prompt: str, seed: int) -> Image.Image:
        r = httpx.post(gw.url + "/v1/images/generations",
                       json={"model": "demo", "prompt": prompt, "size": "256x192", "seed": seed}, timeout=30)
        assert r.status_code == 200, r.text
        return _png(r.json()["data"][0]["b64_json"])

    a1, a2, b, a_other_seed = gen("a red fox", 1), gen("a red fox", 1), gen("a blue whale", 1), gen("a red fox", 2)
    assert a1.size == (256, 192)
    assert a1.tobytes() == a2.tobytes()
    for other in (b, a_other_seed):
        diff = ImageStat.Stat(ImageChops.difference(a1, other)).mean
        assert sum(diff) / 3 > 10, f"images barely differ: {diff}"


def test_sdk_against_demo_url_and_n(gateway: GatewayFactory) -> None:
    gw = gateway()
    client = openai.OpenAI(base_url=gw.base_url, api_key="anything", max_retries=0)
    res = client.images.generate(model="demo", prompt="lighthouse", n=3, size="128x128", response_format="url")
    assert res.data and len(res.data) == 3
    pixels = set()
    for item in res.data:
        assert item.url and item.url.startswith(gw.url + "/images/")
        got = httpx.get(item.url)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        pixels.add(Image.open(io.BytesIO(got.content)).convert("RGB").tobytes())
    assert len(pixels) == 3
    stored = list((gw.data_dir / "images").iterdir())
    assert len(stored) == 3


def test_demo_output_format_is_applied(gateway: GatewayFactory) -> None:
    gw = gateway()
    client = openai.OpenAI(base_url=gw.base_url, api_key="anything", max_retries=0)
    res = client.images.generate(model="demo", prompt="cat", size="64x64", output_format="webp",
                                 output_compression=50)
    assert res.output_format == "webp"
    assert res.data and res.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(res.data[0].b64_json))).format == "WEBP"


def test_models_list_and_get(gateway: GatewayFactory) -> None:
    gw = gateway()
    client = openai.OpenAI(base_url=gw.base_url, api_key="anything", max_retries=0)
    models = {m.id: m.owned_by for m in client.models.list()}
    assert models["demo"] == "demo"
    for name in ("gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "gpt-image-2", "dall-e-3", "dall-e-2"):
        assert models[name] == "openai"
    assert client.models.retrieve("dall-e-3").owned_by == "openai"
    try:
        client.models.retrieve("no-such-model")
        raise AssertionError("expected NotFoundError")
    except openai.NotFoundError as e:
        assert e.code == "model_not_found"


def test_health_and_ready(gateway: GatewayFactory) -> None:
    gw = gateway()
    health = httpx.get(gw.url + "/health").json()
    assert health["status"] == "ok" and health["instance"] == gw.env["GATEWAY_INSTANCE"]
    ready = httpx.get(gw.url + "/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}  # details need an operator key
