"""Replicate through the Images API, in process, against the fake Replicate on 127.0.0.1: predictions created
with Prefer: wait (answered at once when fast, else polled on urls.get), num_outputs or n predictions,
aspect ratios, edits, any owner/model, problem+json errors, failed predictions, cancel."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from PIL import Image

from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_replicate
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_replicate import ReplicateState
from tests.upstreams.pictures import prompt_color
from tests.waits import wait_until

TOKEN = "r8_SECRET_9d8c7b6a5f4e3d2c1b0a"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
providers:
  replicate: {poll_interval_s: 0.02}
routes:
  - {name: ideogram, provider: replicate, upstream_model: ideogram-ai/ideogram-v3-turbo}
  - {name: pinned, provider: replicate, upstream_model: "someone/sdxl:5c7d5dc6dd8bf75c"}
  - {name: schnell-direct, provider: replicate, upstream_model: black-forest-labs/flux-schnell, rehost: false}
"""


@pytest.fixture
def rep() -> Iterator[FakeServer]:
    srv = fake_replicate.start(ReplicateState(token=TOKEN))
    yield srv
    srv.stop()


def st(srv: FakeServer) -> ReplicateState:
    assert isinstance(srv.state, ReplicateState)
    return srv.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, rep: FakeServer) -> InProcessGateway:
    return inprocess_gateway(env={"REPLICATE_API_TOKEN": TOKEN, "REPLICATE_BASE_URL": rep.url}, config_yaml=CONFIG)


def creates(srv: FakeServer) -> list[Any]:
    return [r for r in st(srv).requests if r.method == "POST" and r.path.endswith("predictions")]


def test_flux_schnell_takes_n_as_num_outputs_and_is_polled_then_rehosted(gw: InProcessGateway,
                                                                         rep: FakeServer) -> None:
    raw = gw.openai().images.with_raw_response.generate(model="flux-schnell", prompt="a fox", n=2, size="1792x1024")
    res = raw.parse()
    (create,) = creates(rep)
    assert create.path == "/v1/models/black-forest-labs/flux-schnell/predictions"
    assert create.headers["authorization"] == f"Bearer {TOKEN}" and create.headers["prefer"] == "wait=10"
    assert create.json == {"input": {"prompt": "a fox", "aspect_ratio": "16:9", "num_outputs": 2}}
    assert st(rep).count("/v1/predictions/") >= 2  # polled on urls.get
    assert raw.headers["x-gateway-size"] == "16:9"
    urls = [d.url or "" for d in res.data or []]
    assert len(urls) == 2 and all(u.startswith(gw.url + "/images/") for u in urls)
    st(rep).expired = True
    colors = [Image.open(io.BytesIO(gw.http.get(u).content)).convert("RGB").getpixel((0, 0)) for u in urls]
    assert colors == [prompt_color("a fox", 0), prompt_color("a fox", 1)]
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent(TOKEN)


def test_a_fast_model_answers_the_create_call_and_is_never_polled(gw: InProcessGateway, rep: FakeServer) -> None:
    st(rep).sync = True
    res = gw.openai().images.generate(model="flux-1.1-pro", prompt="quick", n=2, response_format="b64_json")
    assert len(res.data or []) == 2 and len(creates(rep)) == 2  # one image per prediction: n of them
    assert st(rep).count("/v1/predictions/") == 0
    assert all("num_outputs" not in r.json["input"] for r in creates(rep))


def test_any_owner_model_and_a_pinned_version(gw: InProcessGateway, rep: FakeServer) -> None:
    c = gw.openai()
    c.images.generate(model="ideogram", prompt="a sign", extra_body={"style_type": "DESIGN", "seed": 7},
                      response_format="b64_json")
    c.images.generate(model="pinned", prompt="a sign", response_format="b64_json")
    first, second = creates(rep)
    assert first.path == "/v1/models/ideogram-ai/ideogram-v3-turbo/predictions"
    assert first.json["input"] == {"prompt": "a sign", "style_type": "DESIGN", "seed": 7}
    assert second.path == "/v1/predictions" and second.json["version"] == "5c7d5dc6dd8bf75c"


def test_edit_sends_the_image_as_a_data_url_and_rehost_false_keeps_the_url(gw: InProcessGateway,
                                                                           rep: FakeServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (9, 9, 9)).save(buf, "PNG")
    c = gw.openai()
    c.images.edit(model="flux-schnell", image=("a.png", buf.getvalue(), "image/png"), prompt="redo",
                  response_format="b64_json")
    data_url = creates(rep)[0].json["input"]["input_image"]
    assert base64.b64decode(data_url.split(",", 1)[1]) == buf.getvalue()
    res = c.images.generate(model="schnell-direct", prompt="plain", response_format="url")
    assert res.data and (res.data[0].url or "").startswith(rep.url + "/delivery/")


@pytest.mark.parametrize(("prompt", "status", "code", "text"), [
    ("nsfw thing", 400, "content_policy_violation", "NSFW content detected"),
    ("crash now", 502, "upstream_task_failed", "CUDA out of memory"),
])
def test_failed_predictions_carry_their_error_text(gw: InProcessGateway, prompt: str, status: int, code: str,
                                                   text: str) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "flux-schnell", "prompt": prompt})
    assert r.status_code == status and r.json()["error"]["code"] == code and text in r.json()["error"]["message"]


def test_problem_json_errors(inprocess_gateway: InProcessFactory, gw: InProcessGateway, rep: FakeServer) -> None:
    st(rep).throttle_next = 1
    r = gw.http.post("/v1/images/generations", json={"model": "flux-schnell", "prompt": "x"})
    assert r.status_code == 429 and r.headers["retry-after"] and r.json()["error"]["code"] == "rate_limit_exceeded"
    r = gw.http.post("/v1/images/generations", json={"model": "flux-schnell", "prompt": "x", "aspect_ratio": "5:1"})
    assert r.status_code == 200, r.text  # an odd ratio is mapped to the model's nearest, never sent raw
    st(rep).credit = 0
    with pytest.raises(openai.RateLimitError) as ei:
        gw.openai().images.generate(model="flux-schnell", prompt="x")
    assert ei.value.code == "insufficient_quota" and "insufficient credit" in ei.value.message
    bad = inprocess_gateway(env={"REPLICATE_API_TOKEN": "r8_wrong_token_0000", "REPLICATE_BASE_URL": rep.url},
                            config_yaml=CONFIG)
    r = bad.http.post("/v1/images/generations", json={"model": "flux-schnell", "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    gw.remember(r.text)
    gw.assert_secret_absent(TOKEN)
    bad.assert_secret_absent("r8_wrong_token_0000")


def test_stream_progress_and_cancel_through_urls_cancel(gw: InProcessGateway, rep: FakeServer) -> None:
    st(rep).steps = 4
    r = gw.http.post("/v1/images/generations", json={"model": "flux-1.1-pro", "prompt": "kite", "stream": True})
    progress = [int(x.split()[-1].rstrip("%")) for x in r.text.splitlines() if x.startswith(": progress")]
    assert max(progress) >= 40 and "image_generation.completed" in r.text
    st(rep).hang = True
    r = gw.http.post("/v1/images/generations", headers={"Prefer": "respond-async"},
                     json={"model": "flux-1.1-pro", "prompt": "forever"})
    assert r.status_code == 202, r.text
    task = r.json()["id"]
    wait_until(lambda: gw.http.get(f"/v1/images/tasks/{task}").json()["status"] == "in_progress",
               what="the prediction running")
    assert gw.http.delete(f"/v1/images/tasks/{task}").json()["status"] == "cancelled"
    wait_until(lambda: st(rep).cancels == 1, what="urls.cancel")
    assert [p.status for p in st(rep).preds.values()][-1] == "canceled"
