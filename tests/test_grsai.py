"""GrsAi through the Images API (official SDK and raw SSE), against the fake GrsAi on 127.0.0.1.

Stream mode with progress, polling mode, -22, moderation, a stream that breaks mid-way, n > 1,
edits as `urls`, size → aspectRatio/imageSize, and re-hosting of the 2-hour result URLs.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from image_gateway.core.types import CallContext, ImageRequest, Pending, ProviderResult
from image_gateway.errors import GatewayError
from image_gateway.providers.grsai import GrsAiProvider
from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.upstreams import fake_grsai
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_grsai import GrsAiState
from tests.waits import await_until

GRS_KEY = "sk-grs-SECRET-0a1b2c3d4e5f6789"
STEP = 0.04
CONFIG = """
router: {cooldown_failures: 1000}
providers:
  grsai: {poll_interval_s: 0.03}
routes:
  - {name: banana-poll, provider: grsai, upstream_model: nano-banana, mode: poll}
  - {name: banana-direct, provider: grsai, upstream_model: nano-banana, rehost: false}
"""


@pytest.fixture(scope="module")
def grs_server() -> Iterator[FakeServer]:
    server = fake_grsai.start(GrsAiState(api_key=GRS_KEY, step_s=STEP))
    yield server
    server.stop()


@pytest.fixture
def grs(grs_server: FakeServer) -> FakeServer:
    state(grs_server).reset()
    return grs_server


def state(grs: FakeServer) -> GrsAiState:
    assert isinstance(grs.state, GrsAiState)
    return grs.state


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, grs_server: FakeServer) -> Iterator[GatewayProcess]:
    """One gateway for the module (a start costs ~1 s); the fake is reset before each test."""
    gw = GatewayProcess(tmp_path_factory.mktemp("grsai"), {"GRSAI_API_KEY": GRS_KEY, "GRSAI_BASE_URL": grs_server.url},
                        CONFIG).start()
    yield gw
    gw.kill()


@pytest.fixture
def gw(shared: GatewayProcess, grs: FakeServer) -> GatewayProcess:
    return shared


def client(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key="caller-token", max_retries=0)


def submits(grs: FakeServer) -> list[dict[str, Any]]:
    return [r.json for r in state(grs).requests if r.path.startswith("/v1/draw/") and r.path != "/v1/draw/result"]


def png_at(url: str) -> Image.Image:
    r = httpx.get(url)
    assert r.status_code == 200, r.text
    return Image.open(io.BytesIO(r.content)).convert("RGB")


def done(gw: GatewayProcess, *texts: str) -> None:
    gw.remember(*texts)
    gw.assert_secret_absent(GRS_KEY)


def test_stream_mode_maps_size_and_rehosts_the_expiring_url(gw: GatewayProcess, grs: FakeServer) -> None:
    res = client(gw).images.generate(model="nano-banana", prompt="a red fox", size="1536x1024")
    (body,) = submits(grs)
    assert body == {"model": "nano-banana", "prompt": "a red fox", "aspectRatio": "3:2", "shutProgress": False}
    assert state(grs).requests[0].headers["authorization"] == f"Bearer {GRS_KEY}"
    assert state(grs).polls == 0
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/"), url  # re-hosted: GrsAi's own URL dies after 2 h
    img = png_at(url)
    assert img.size == (128, 85) and img.getpixel((0, 0)) == fake_grsai.prompt_color("a red fox")
    done(gw, res.model_dump_json())


@pytest.mark.parametrize("quirk", ["no_space_after_data", "no_newlines"])
def test_stream_quirks_are_parsed(gw: GatewayProcess, grs: FakeServer, quirk: str) -> None:
    setattr(state(grs), quirk, True)
    res = client(gw).images.generate(model="nano-banana", prompt="a quirk", response_format="b64_json")
    assert res.data and res.data[0].b64_json and state(grs).polls == 0


def test_rehost_can_be_turned_off_per_route(gw: GatewayProcess, grs: FakeServer) -> None:
    res = client(gw).images.generate(model="banana-direct", prompt="a boat")
    assert res.data and res.data[0].url and res.data[0].url.startswith(grs.url + "/files/")
    b64 = client(gw).images.generate(model="banana-direct", prompt="a boat", response_format="b64_json")
    assert b64.data and b64.data[0].b64_json
    assert Image.open(io.BytesIO(base64.b64decode(b64.data[0].b64_json))).format == "PNG"


def test_image_stream_relays_upstream_progress(gw: GatewayProcess, grs: FakeServer) -> None:
    lines: list[str] = []
    with httpx.stream("POST", gw.base_url + "/images/generations", timeout=30,
                      json={"model": "nano-banana", "prompt": "a kite", "stream": True}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
    progress = [int(x.split()[-1].rstrip("%")) for x in lines if x.startswith(": progress")]
    assert progress == [0, 25, 50, 75]
    events = [json.loads(x[6:]) for x in lines if x.startswith("data: {")]
    assert [e["type"] for e in events] == ["image_generation.completed"]
    assert lines[-1] == "data: [DONE]" or "data: [DONE]" in lines
    done(gw, *lines)


def test_polling_mode_and_not_found_right_after_submit(gw: GatewayProcess, grs: FakeServer) -> None:
    state(grs).not_found_first_polls = 2
    res = client(gw).images.generate(model="banana-poll", prompt="a snail", size="1024x1792")
    (body,) = submits(grs)
    assert body["webHook"] == "-1" and body["aspectRatio"] == "9:16"
    assert state(grs).polls >= 3  # two -22 answers were waited out, not treated as failures
    assert res.data and res.data[0].url and png_at(res.data[0].url).size == (72, 128)
    done(gw, res.model_dump_json())


def test_stream_that_breaks_after_the_id_is_polled_not_resubmitted(gw: GatewayProcess, grs: FakeServer) -> None:
    st = state(grs)
    st.break_stream_after = 2
    res = client(gw).images.generate(model="nano-banana", prompt="a tram")
    assert len(submits(grs)) == 1 and st.polls >= 1
    assert res.data and res.data[0].url and png_at(res.data[0].url).getpixel((0, 0)) == \
        fake_grsai.prompt_color("a tram")
    st.break_stream_clean = True  # the body ends cleanly but without a final snapshot: same thing
    client(gw).images.generate(model="nano-banana", prompt="a bus")
    assert len(submits(grs)) == 2
    done(gw, res.model_dump_json())


def test_parallel_streams_that_break_are_all_polled(gw: GatewayProcess, grs: FakeServer) -> None:
    state(grs).break_stream_after = 1
    res = client(gw).images.generate(model="nano-banana", prompt="two pears", n=2)
    assert len(submits(grs)) == 2 and state(grs).polls >= 2
    assert res.data is not None and len({d.url for d in res.data}) == 2


async def test_poll_contract_in_process(grs: FakeServer) -> None:
    """poll() returns one outcome per handle: a result, or the handle's GatewayError (not raised);
    a handle survives a JSON round trip and carries images that finished before the stream broke."""
    p = GrsAiProvider(SimpleNamespace(base_url=grs.url, timeout_s=5.0, options={}))
    ctx = CallContext("nano-banana", GRS_KEY, {"mode": "poll"})
    try:
        handles = []
        for prompt in ("a mug", "nsfw mug"):
            events = [ev async for ev in p.stream(ImageRequest("generate", prompt, "nano-banana"), ctx)]
            assert isinstance(events[-1], Pending)
            handles.append(json.loads(json.dumps(events[-1].handle)))
        handles[0]["done"] = [{"url": "https://example.com/earlier.png"}]
        async def settled() -> list[Any] | None:
            outcomes = list(await p.poll(handles, ctx))
            return outcomes if isinstance(outcomes[0], ProviderResult) else None

        outcomes = await await_until(settled, 100 * STEP, interval=STEP, what="the first handle to finish")
        assert outcomes is not None
        ok, bad = outcomes
        assert isinstance(ok, ProviderResult) and ok.images[0].url == "https://example.com/earlier.png"
        assert len(ok.images) == 2 and "rehost" not in ok.meta  # (the API layer decides, by option)
        assert isinstance(bad, GatewayError) and bad.code == "content_policy_violation"
    finally:
        await p.close()


def test_stream_that_breaks_before_any_snapshot_fails_without_resubmitting(gw: GatewayProcess,
                                                                           grs: FakeServer) -> None:
    state(grs).break_stream_after = 0
    r = httpx.post(gw.base_url + "/images/generations", json={"model": "nano-banana", "prompt": "x"}, timeout=30)
    assert r.status_code == 502 and "before naming the task" in r.json()["error"]["message"]
    assert len(submits(grs)) == 1
    done(gw, r.text)


@pytest.mark.parametrize(("model", "prompt", "reason"), [
    ("nano-banana", "nsfw picture", "input_moderation"),
    ("banana-poll", "nsfw picture", "input_moderation"),
    ("banana-poll", "some gore", "output_moderation"),
])
def test_moderation_is_content_policy_violation(gw: GatewayProcess, grs: FakeServer, model: str, prompt: str,
                                                reason: str) -> None:
    state(grs).output_moderation_prompts = ["gore"]
    with pytest.raises(openai.BadRequestError) as e:
        client(gw).images.generate(model=model, prompt=prompt)
    assert e.value.status_code == 400 and e.value.code == "content_policy_violation"
    assert reason in e.value.message
    assert len(submits(grs)) == 1  # a safety refusal is not retried
    done(gw, str(e.value.body))


def test_n_is_parallel_submits_merged(gw: GatewayProcess, grs: FakeServer) -> None:
    state(grs).step_s = 0.15
    started = time.monotonic()
    res = client(gw).images.generate(model="nano-banana", prompt="a cup", n=3)
    elapsed = time.monotonic() - started
    assert len(submits(grs)) == 3 and res.data is not None and len(res.data) == 3
    assert len({d.url for d in res.data}) == 3
    assert elapsed < 4 * 0.15 * 2  # one task takes ~5 steps; three in a row would take ~15
    done(gw, res.model_dump_json())


def test_routes_endpoints_and_sizes(gw: GatewayProcess, grs: FakeServer) -> None:
    c = client(gw)
    c.images.generate(model="sora-image", prompt="a", size="1024x1536")
    c.images.generate(model="gpt-4o-image", prompt="b")
    c.images.generate(model="nano-banana-pro", prompt="c", size="2048x2048")
    c.images.generate(model="nano-banana-pro", prompt="d", extra_body={"aspect_ratio": "1:2", "image_size": "4k"})
    c.images.generate(model="sd-fast", prompt="e", size="1792x1024", quality="high")
    paths = [r.path for r in state(grs).requests if r.path.startswith("/v1/draw/") and r.path != "/v1/draw/result"]
    assert paths == ["/v1/draw/completions", "/v1/draw/completions", *["/v1/draw/nano-banana"] * 3]
    a, b, c_, d, e = submits(grs)
    assert (a["model"], a["size"]) == ("sora-image", "2:3") and "aspectRatio" not in a
    assert (b["model"], b["size"]) == ("gpt-4o-image", "auto")
    assert (c_["aspectRatio"], c_["imageSize"]) == ("1:1", "2K")
    assert (d["aspectRatio"], d["imageSize"]) == ("9:16", "4K")  # 1:2 is not a GrsAi ratio: nearest
    assert e == {"model": "nano-banana-fast", "prompt": "e", "aspectRatio": "16:9", "shutProgress": False}


def test_edits_send_urls(gw: GatewayProcess, grs: FakeServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    res = client(gw).images.edit(model="nano-banana", image=("ref.png", buf.getvalue(), "image/png"),
                                 prompt="make it blue")
    assert res.data
    r = httpx.post(gw.base_url + "/images/edits", timeout=30, json={
        "model": "nano-banana", "prompt": "again", "images": [{"image_url": "https://example.com/a.png"}]})
    assert r.status_code == 200, r.text
    first, second = submits(grs)
    assert first["urls"] == ["data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()]
    assert second["urls"] == ["https://example.com/a.png"]
    done(gw, res.model_dump_json(), r.text)


def test_a_wrong_key_is_401_and_never_echoed(gateway: GatewayFactory, grs: FakeServer) -> None:
    bad = "sk-grs-WRONG-99999999999999"
    gw = gateway(env={"GRSAI_API_KEY": bad, "GRSAI_BASE_URL": grs.url})
    with pytest.raises(openai.AuthenticationError) as e:
        client(gw).images.generate(model="nano-banana", prompt="x")
    assert e.value.code == "invalid_api_key"
    gw.remember(str(e.value.body))
    gw.assert_secret_absent(bad)
