"""fal through the Images API, in process, against the fake fal queue on 127.0.0.1: submit, the returned
status_url (without the model's subpath) polled, the response_url fetched, image_size mapping, n, edits,
re-hosting, fal's error shapes, cancel through cancel_url."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_fal
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_fal import FalState
from tests.upstreams.pictures import prompt_color
from tests.waits import wait_until

KEY = "fal-SECRET-1a2b3c4d:5e6f7a8b9c0d"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
providers:
  fal: {poll_interval_s: 0.02}
routes:
  - {name: krea, provider: fal, upstream_model: fal-ai/flux/krea}
  - {name: seedream-edit, provider: fal, upstream_model: fal-ai/bytedance/seedream/v4/edit}
"""


@pytest.fixture
def fal() -> Iterator[FakeServer]:
    srv = fake_fal.start(FalState(key=KEY))
    yield srv
    srv.stop()


def st(srv: FakeServer) -> FalState:
    assert isinstance(srv.state, FalState)
    return srv.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, fal: FakeServer) -> InProcessGateway:
    return inprocess_gateway(env={"FAL_KEY": KEY, "FAL_BASE_URL": fal.url}, config_yaml=CONFIG)


def submits(srv: FakeServer) -> list[Any]:
    return [r for r in st(srv).requests if r.method == "POST"]


def test_queue_round_trip_with_named_size_and_rehosted_urls(gw: InProcessGateway, fal: FakeServer) -> None:
    raw = gw.openai().images.with_raw_response.generate(model="fal-flux-dev", prompt="a fox", n=2, size="1024x768")
    res = raw.parse()
    (sub,) = submits(fal)
    assert sub.path == "/fal-ai/flux/dev" and sub.headers["authorization"] == f"Key {KEY}"
    assert sub.json == {"prompt": "a fox", "image_size": "landscape_4_3", "num_images": 2}
    (rid,) = st(fal).reqs
    status_polls = [r for r in st(fal).requests if r.path == f"/fal-ai/flux/requests/{rid}/status"]
    assert len(status_polls) >= 3 and all(r.headers["authorization"] == f"Key {KEY}" for r in status_polls)
    assert st(fal).count(f"/fal-ai/flux/requests/{rid}") > len(status_polls)  # ...and the response fetched
    assert raw.headers["x-gateway-size"] == "1024x768"
    urls = [d.url or "" for d in res.data or []]
    assert len(urls) == 2 and all(u.startswith(gw.url + "/images/") for u in urls)
    st(fal).expired = True
    colors = [Image.open(io.BytesIO(gw.http.get(u).content)).convert("RGB").getpixel((0, 0)) for u in urls]
    assert colors == [prompt_color("a fox", 0), prompt_color("a fox", 1)]
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent(KEY)


def test_custom_sizes_any_model_path_and_seedream_minimum(gw: InProcessGateway, fal: FakeServer) -> None:
    c = gw.openai()
    c.images.generate(model="krea", prompt="wide", size="1792x1024", response_format="b64_json",
                      extra_body={"guidance_scale": 4.5})
    c.images.generate(model="fal-seedream", prompt="tall", size="512x1024", response_format="b64_json")
    first, second = submits(fal)
    assert first.path == "/fal-ai/flux/krea"
    assert first.json == {"prompt": "wide", "guidance_scale": 4.5, "num_images": 1,
                          "image_size": {"width": 1792, "height": 1024}}
    assert second.path == "/fal-ai/bytedance/seedream/v4/text-to-image"
    assert second.json["image_size"] == {"width": 1024, "height": 2048}


def test_edit_sends_data_urls_in_image_urls(gw: InProcessGateway, fal: FakeServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (5, 6, 7)).save(buf, "PNG")
    res = gw.openai().images.edit(model="seedream-edit", image=("a.png", buf.getvalue(), "image/png"),
                                  prompt="recolour", response_format="b64_json")
    assert res.data and res.data[0].b64_json
    (url,) = submits(fal)[0].json["image_urls"]
    assert base64.b64decode(url.split(",", 1)[1]) == buf.getvalue()


@pytest.mark.parametrize(("prompt", "status", "code"), [
    ("blocked words", 400, "content_policy_violation"),
    ("nsfw words", 400, "content_policy_violation"),
    ("broken runner", 502, "upstream_task_failed"),
])
def test_failures_map_to_openai_errors(gw: InProcessGateway, prompt: str, status: int, code: str) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "fal-flux-pro", "prompt": prompt})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_bad_key_is_a_401(inprocess_gateway: InProcessFactory, fal: FakeServer) -> None:
    gw = inprocess_gateway(env={"FAL_KEY": "fal-wrong:000000000", "FAL_BASE_URL": fal.url}, config_yaml=CONFIG)
    r = gw.http.post("/v1/images/generations", json={"model": "fal-flux-dev", "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
    gw.assert_secret_absent("fal-wrong:000000000")


def test_stream_progress_and_cancel_through_cancel_url(gw: InProcessGateway, fal: FakeServer) -> None:
    st(fal).steps = 4
    r = gw.http.post("/v1/images/generations", json={"model": "fal-flux-dev", "prompt": "kite", "stream": True})
    progress = [int(x.split()[-1].rstrip("%")) for x in r.text.splitlines() if x.startswith(": progress")]
    assert progress and max(progress) >= 40 and "image_generation.completed" in r.text, r.text
    st(fal).hang = True
    r = gw.http.post("/v1/images/generations", headers={"Prefer": "respond-async"},
                     json={"model": "fal-flux-dev", "prompt": "forever"})
    task = r.json()["id"]
    wait_until(lambda: gw.http.get(f"/v1/images/tasks/{task}").json()["status"] == "in_progress",
               what="the request running")
    assert gw.http.delete(f"/v1/images/tasks/{task}").json()["status"] == "cancelled"
    wait_until(lambda: st(fal).cancels == 1, what="the PUT to cancel_url")
    assert any(r.method == "PUT" and r.path.endswith("/cancel") for r in st(fal).requests)
