"""Azure OpenAI deployments through the Images API: the official SDK → the gateway app (in-process) → the
fake Azure endpoint on 127.0.0.1 (tests/upstreams/fake_azure.py, fake_openai's translation at Azure's paths)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from image_gateway.providers.azure import DEFAULT_API_VERSION
from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_azure
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_azure import AzureState

KEY = "0123456789abcdef0123456789AZUREK"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
routes:
  - {name: my-dalle, provider: azure, upstream_model: my-dalle, base_model: dall-e-3}
  - {name: azure-image, provider: azure, upstream_model: img, base_model: gpt-image-1}
"""


@pytest.fixture(scope="module")
def az_server() -> Iterator[FakeServer]:
    server = fake_azure.start(KEY)
    yield server
    server.stop()


@pytest.fixture
def az(az_server: FakeServer) -> FakeServer:
    state(az_server).reset()
    return az_server


def state(server: FakeServer) -> AzureState:
    assert isinstance(server.state, AzureState)
    return server.state


def env(az: FakeServer, **more: str) -> dict[str, str]:
    return {"AZURE_OPENAI_API_KEY": KEY, "AZURE_OPENAI_ENDPOINT": az.url, **more}


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, az: FakeServer) -> InProcessGateway:
    return inprocess_gateway(env(az), CONFIG)


def test_a_route_names_its_deployment(gw: InProcessGateway, az: FakeServer) -> None:
    res = gw.openai().images.generate(model="my-dalle", prompt="a castle", size="1792x1024", quality="hd",
                                      response_format="url")
    (rec,) = state(az).requests
    assert rec.path == "/openai/deployments/my-dalle/images/generations"
    assert rec.raw and rec.headers["api-key"] == KEY and "authorization" not in rec.headers
    assert rec.extra["deployment_model"] == "dall-e-3"
    # No `model`: the deployment names it; no output_format for DALL·E; base64 asked, as the gateway hosts
    # the image on its own origin either way (api/delivery.py upstream_format).
    assert rec.json == {"prompt": "a castle", "n": 1, "size": "1792x1024", "response_format": "b64_json",
                        "quality": "hd"}
    assert res.data and res.data[0].url and res.data[0].revised_prompt
    gw.assert_secret_absent(KEY)


def test_api_version_default_and_from_openai_api_version(inprocess_gateway: InProcessFactory, az: FakeServer) -> None:
    gw = inprocess_gateway(env(az), CONFIG)
    gw.openai().images.generate(model="azure-image", prompt="a fox")
    gw2 = inprocess_gateway(env(az, OPENAI_API_VERSION="2025-04-01-preview"), CONFIG)
    gw2.openai().images.generate(model="azure-image", prompt="a fox")
    assert [r.extra["api_version"] for r in state(az).requests] == [DEFAULT_API_VERSION, "2025-04-01-preview"]


def test_gpt_image_deployment_b64_and_edits(gw: InProcessGateway, az: FakeServer) -> None:
    res = gw.openai().images.generate(model="azure-image", prompt="a fox", size="1024x1536", n=2)
    sent = fake_azure.sent_json(state(az))[0]
    assert "response_format" not in sent and sent["n"] == 2  # gpt-image: base64 always, the gateway hosts URLs
    assert res.data and len(res.data) == 2 and res.data[0].b64_json
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (5, 6, 7)).save(buf, "PNG")
    res = gw.openai().images.edit(model="azure-image", prompt="add a hat", image=("a.png", buf.getvalue(), "image/png"),
                                  response_format="url")
    rec = state(az).requests[-1]
    assert rec.path == "/openai/deployments/img/images/edits" and rec.files["image"][0][2] == buf.getvalue()
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/")
    got = gw.http.get(url)
    assert got.status_code == 200 and base64.b64encode(got.content)
    gw.assert_secret_absent(KEY)


def test_direct_deployment_name_without_a_route(gw: InProcessGateway, az: FakeServer) -> None:
    res = gw.openai().images.generate(model="azure/img", prompt="a fox")
    assert res.data and res.data[0].b64_json
    assert state(az).requests[-1].path == "/openai/deployments/img/images/generations"
    with pytest.raises(openai.NotFoundError) as e:
        gw.openai().images.generate(model="azure/no-such-deployment", prompt="a fox")
    assert "deployment" in e.value.body["message"].lower()  # type: ignore[index]


def test_content_filter_and_errors(gw: InProcessGateway, az: FakeServer, inprocess_gateway: InProcessFactory) -> None:
    state(az).fail_next(fake_azure.content_filtered())
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.generate(model="my-dalle", prompt="something violent")
    assert e.value.body["code"] == "content_policy_violation"  # type: ignore[index]
    assert e.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    state(az).fail_next(fake_azure.throttled("2"))
    with pytest.raises(openai.RateLimitError) as rl:
        gw.openai().images.generate(model="my-dalle", prompt="x")
    assert rl.value.response.headers["retry-after"] == "2"
    bad = inprocess_gateway(env(az, AZURE_OPENAI_API_KEY="wrong-azure-key-000000000"), CONFIG)
    with pytest.raises(openai.AuthenticationError) as auth:
        bad.openai().images.generate(model="my-dalle", prompt="x")
    assert auth.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    bad.assert_secret_absent("wrong-azure-key-000000000")
    gw.assert_secret_absent(KEY)


def test_no_endpoint_is_a_clear_answer(inprocess_gateway: InProcessFactory) -> None:
    gw = inprocess_gateway({"AZURE_OPENAI_API_KEY": KEY}, CONFIG)
    with pytest.raises(openai.APIStatusError) as e:
        gw.openai().images.generate(model="my-dalle", prompt="x")
    assert e.value.status_code == 503 and "AZURE_OPENAI_ENDPOINT" in e.value.body["message"]  # type: ignore[index]
    gw.assert_secret_absent(KEY)


def test_stream_relays_the_deployments_events(gw: InProcessGateway, az: FakeServer) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "azure-image", "prompt": "a kite", "stream": True,
                                                     "partial_images": 1})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    types = [json.loads(x[6:])["type"] for x in r.text.splitlines() if x.startswith("data: {")]
    assert types == ["image_generation.partial_image", "image_generation.completed"]
    assert fake_azure.sent_json(state(az))[-1]["stream"] is True
    gw.assert_secret_absent(KEY)
