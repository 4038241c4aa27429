"""Hosted images expire by TTL and are cleaned; upstream downloads are capped."""

from __future__ import annotations

import httpx
import openai

from tests.conftest import GatewayFactory
from tests.upstreams.base import FakeServer
from tests.waits import wait_until

KEY = "sk-store-test-key-000011112222"


def test_hosted_images_expire_and_are_swept(gateway: GatewayFactory) -> None:
    gw = gateway({"IMAGE_TTL_S": "1"})
    r = httpx.post(gw.base_url + "/images/generations",
                   json={"model": "demo", "prompt": "x", "size": "32x32", "response_format": "url"})
    url = r.json()["data"][0]["url"]
    assert httpx.get(url).status_code == 200
    wait_until(lambda: not any((gw.data_dir / "images").iterdir()), timeout=8, interval=0.1,
               what="the expired file to be swept")
    gone = httpx.get(url)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "image_not_found"
    assert httpx.get(gw.url + "/images/..%2Fgateway.log").status_code == 404


def test_download_size_cap(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    yaml = "routes:\n  - {name: dalle-url, provider: openai, upstream_model: dall-e-2, native_response_format: false}\n"
    gw = gateway({"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1", "DOWNLOAD_MAX_BYTES": "50"},
                 config_yaml=yaml)
    client = openai.OpenAI(base_url=gw.base_url, api_key="x", max_retries=0)
    try:
        client.images.generate(model="dalle-url", prompt="fox", response_format="b64_json")
        raise AssertionError("expected an error")
    except openai.APIStatusError as e:
        assert e.status_code == 502
        assert "download limit" in e.response.json()["error"]["message"]
        gw.remember(e.response.text)
    gw.assert_secret_absent(KEY)
