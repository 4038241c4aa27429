"""The same surface through the SDK's async client (AsyncOpenAI), as asyncio applications use it."""

from __future__ import annotations

import asyncio
import io

import openai
import pytest
from PIL import Image

from tests.conftest import GatewayFactory
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

UPSTREAM_KEY = "sk-async-upstream-1234567890abcd"
GATEWAY_KEY = "gw-async-gateway-key-12345678"


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def test_async_client_end_to_end(gateway: GatewayFactory, openai_upstream: FakeServer) -> None:
    gw = gateway({"OPENAI_API_KEY": UPSTREAM_KEY, "OPENAI_BASE_URL": openai_upstream.url + "/v1",
                  "GATEWAY_API_KEYS": GATEWAY_KEY}, config_yaml="router: {retries: 0}\n")

    async def scenario() -> list[str]:
        seen: list[str] = []
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=GATEWAY_KEY, max_retries=0) as client:
            # Several requests at once: each gets its own answer.
            results = await asyncio.gather(*(
                client.images.generate(model="gpt-image-1", prompt=f"otter {i}", n=2) for i in range(4)))
            for res in results:
                assert res.data is not None and len(res.data) == 2 and res.data[0].b64_json
                seen.append(res.model_dump_json())
            prompts = sorted(r.json["prompt"] for r in openai_upstream.state.requests if r.json)
            assert prompts == [f"otter {i}" for i in range(4)]

            url_res = await client.images.generate(model="gpt-image-1", prompt="x", response_format="url")
            assert url_res.data and url_res.data[0].url and url_res.data[0].url.startswith(gw.url)

            edit = await client.images.edit(model="gpt-image-1", image=[("a.png", _png(), "image/png"),
                                                                        ("b.png", _png(), "image/png")],
                                            prompt="combine")
            assert edit.data and len(fake_openai.last_request(openai_upstream.state).files["image[]"]) == 2

            stream = await client.images.generate(model="gpt-image-1", prompt="x", stream=True, partial_images=1)
            types = [ev.type async for ev in stream]
            assert types == ["image_generation.partial_image", "image_generation.completed"]

            models = [m.id async for m in client.models.list()]
            assert "gpt-image-1" in models and "demo" in models

            openai_upstream.state.fail_next(fake_openai.rate_limited("5"))
            with pytest.raises(openai.RateLimitError) as info:
                await client.images.generate(model="gpt-image-1", prompt="x")
            assert info.value.response.headers["retry-after"] == "5"
            seen.append(info.value.response.text)
            with pytest.raises(openai.NotFoundError):
                await client.images.generate(model="no-such-model", prompt="x")
        return seen

    seen = asyncio.run(scenario())
    gw.remember(*seen)
    gw.assert_secret_absent(UPSTREAM_KEY, GATEWAY_KEY)
