"""Black Forest Labs through the Images API (official SDK and raw HTTP), in process, against the fake BFL
on 127.0.0.1: the returned polling_url polled, sizes per model family, edits as input_image, n, url
(re-hosted) and b64_json, stream progress, BFL's error bodies and statuses, the polling_url host guard."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import openai
import pytest
from PIL import Image

from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_bfl
from tests.upstreams.base import FakeServer, Fault
from tests.upstreams.fake_bfl import BflState
from tests.upstreams.pictures import prompt_color

KEY = "bfl-SECRET-4f1e9a7c2b3d5e6f"
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
providers:
  bfl: {poll_interval_s: 0.02}
routes:
  - {name: bfl-direct, provider: bfl, upstream_model: flux-pro-1.1, rehost: false}
"""


@pytest.fixture
def bfl() -> Iterator[FakeServer]:
    srv = fake_bfl.start(BflState(api_key=KEY))
    yield srv
    srv.stop()


def st(srv: FakeServer) -> BflState:
    assert isinstance(srv.state, BflState)
    return srv.state


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, bfl: FakeServer) -> InProcessGateway:
    return inprocess_gateway(env={"BFL_API_KEY": KEY, "BFL_BASE_URL": bfl.url}, config_yaml=CONFIG)


def submits(srv: FakeServer) -> list[dict[str, object]]:
    return [r.json for r in st(srv).requests if r.method == "POST" and r.path.startswith("/v1/")]


def picture(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_generate_polls_the_returned_url_and_rehosts_the_expiring_sample(gw: InProcessGateway,
                                                                         bfl: FakeServer) -> None:
    raw = gw.openai().images.with_raw_response.generate(model="flux-pro-1.1", prompt="a red fox", size="1536x1024")
    res = raw.parse()
    assert submits(bfl) == [{"prompt": "a red fox", "width": 1440, "height": 960}]
    sub = next(r for r in st(bfl).requests if r.method == "POST")
    assert sub.path == "/v1/flux-pro-1.1" and sub.headers["x-key"] == KEY
    polls = [r for r in st(bfl).requests if r.path == "/v1/get_result"]
    assert len(polls) >= 3 and all(r.headers["x-key"] == KEY for r in polls)
    assert raw.headers["x-gateway-size"] == "1440x960" and res.size == "1440x960"
    url = res.data[0].url if res.data else None
    assert url and url.startswith(gw.url + "/images/"), url  # not BFL's 10-minute delivery URL
    st(bfl).expire()  # the upstream URL is dead now; ours still serves the image
    img = picture(gw.http.get(url).content)
    assert img.size == (128, 85) and img.getpixel((0, 0)) == prompt_color("a red fox")
    gw.remember(res.model_dump_json())
    gw.assert_secret_absent(KEY)


def test_rehost_false_keeps_the_upstream_url_and_b64_json_downloads(gw: InProcessGateway, bfl: FakeServer) -> None:
    c = gw.openai()
    res = c.images.generate(model="bfl-direct", prompt="a boat", response_format="url")
    assert res.data and res.data[0].url and res.data[0].url.startswith(bfl.url + "/delivery/")
    b64 = c.images.generate(model="flux-dev", prompt="a boat", response_format="b64_json")
    assert b64.data and b64.data[0].b64_json
    assert picture(base64.b64decode(b64.data[0].b64_json)).getpixel((0, 0)) == prompt_color("a boat")
    gw.assert_secret_absent(KEY)


def test_n_submits_that_many_tasks(gw: InProcessGateway, bfl: FakeServer) -> None:
    res = gw.openai().images.generate(model="flux-2-pro", prompt="tiles", n=3, response_format="b64_json")
    assert len(res.data or []) == 3 and st(bfl).submits == 3
    assert len({r.json["prompt"] for r in st(bfl).requests if r.json}) == 1


@pytest.mark.parametrize(("model", "size", "ratio", "sent", "reported"), [
    ("flux-pro-1.1-ultra", "1792x1024", None, {"aspect_ratio": "16:9"}, "16:9"),
    ("flux-kontext-pro", None, "9:21", {"aspect_ratio": "9:21"}, "9:21"),
    ("flux-2-pro", "2048x2048", None, {"width": 2048, "height": 2048}, "2048x2048"),
    ("flux-2-flex", "4096x1024", None, {"width": 2048, "height": 512}, "2048x512"),
    ("flux-dev", "100x100", None, {"width": 256, "height": 256}, "256x256"),
])
def test_size_and_ratio_map_per_model_family(gw: InProcessGateway, bfl: FakeServer, model: str, size: str | None,
                                             ratio: str | None, sent: dict[str, object], reported: str) -> None:
    body: dict[str, object] = {"model": model, "prompt": "shape", "response_format": "b64_json"}
    if size:
        body["size"] = size
    if ratio:
        body["aspect_ratio"] = ratio
    r = gw.http.post("/v1/images/generations", json=body)
    assert r.status_code == 200, r.text
    (got,) = submits(bfl)
    assert {k: got[k] for k in sent} == sent and not ({"width", "aspect_ratio"} - set(sent)) & set(got)
    assert r.headers["x-gateway-size"] == reported


def test_edit_sends_input_images_and_a_model_without_edits_is_a_400(gw: InProcessGateway, bfl: FakeServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG")
    c = gw.openai()
    res = c.images.edit(model="flux-kontext-pro", image=[("a.png", buf.getvalue(), "image/png")] * 2,
                        prompt="make it blue", response_format="b64_json")
    assert res.data and res.data[0].b64_json
    (body,) = submits(bfl)
    assert base64.b64decode(str(body["input_image"])) == buf.getvalue()
    assert base64.b64decode(str(body["input_image_2"])) == buf.getvalue()
    with pytest.raises(openai.BadRequestError) as ei:
        c.images.edit(model="flux-pro-1.1", image=("a.png", buf.getvalue(), "image/png"), prompt="x")
    assert ei.value.code == "unsupported_operation" and "flux-kontext-pro" in ei.value.message
    assert st(bfl).submits == 1


def test_stream_reports_bfl_progress_then_the_image(gw: InProcessGateway, bfl: FakeServer) -> None:
    st(bfl).steps = 4
    r = gw.http.post("/v1/images/generations", json={"model": "flux-dev", "prompt": "a kite", "stream": True})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    lines = r.text.splitlines()
    progress = [int(x.split()[-1].rstrip("%")) for x in lines if x.startswith(": progress")]
    assert progress and progress == sorted(progress) and max(progress) >= 40, lines
    assert any("image_generation.completed" in x for x in lines)
    gw.remember(r.text)
    gw.assert_secret_absent(KEY)


@pytest.mark.parametrize(("fault", "status", "code"), [
    (Fault(status=422, body={"detail": [{"loc": ["body", "width"], "msg": "multiple of 32",
                                         "type": "value_error"}]}, match="/v1/flux"), 400, "invalid_value"),
    (Fault(status=402, body={"detail": "Insufficient credits"}, match="/v1/flux"), 429, "insufficient_quota"),
    (Fault(status=429, body={"detail": "Too many active tasks"}, headers={"Retry-After": "7"}, match="/v1/flux"),
     429, "rate_limit_exceeded"),
    (Fault(status=503, body="<html>busy</html>", content_type="text/html", match="/v1/flux"), 502, "upstream_error"),
    (Fault(status=500, body={"detail": "boom"}, match="/v1/get_result"), 502, None),
])
def test_upstream_error_bodies_map_to_openai_errors(gw: InProcessGateway, bfl: FakeServer, fault: Fault,
                                                    status: int, code: str | None) -> None:
    faults = [fault] * (12 if fault.match == "/v1/get_result" else 1)  # a poll error only ends it when it persists
    st(bfl).fail_next(*faults)
    r = gw.http.post("/v1/images/generations", json={"model": "flux-dev", "prompt": "x"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and (code is None or err["code"] == code), err
    if status == 429 and code == "rate_limit_exceeded":
        assert r.headers.get("retry-after")
    if fault.status == 422:
        assert err["param"] == "width" and "multiple of 32" in err["message"]
    gw.remember(r.text)
    gw.assert_secret_absent(KEY)


@pytest.mark.parametrize(("prompt", "status", "code"), [
    ("forbidden things", 400, "content_policy_violation"),
    ("an unsafe output", 400, "content_policy_violation"),
    ("explode please", 502, "upstream_task_failed"),
])
def test_task_outcomes_map_to_errors(gw: InProcessGateway, bfl: FakeServer, prompt: str, status: int,
                                     code: str) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "flux-dev", "prompt": prompt})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text


def test_a_bad_key_is_a_401_and_a_slow_upstream_a_504(inprocess_gateway: InProcessFactory, bfl: FakeServer) -> None:
    gw = inprocess_gateway(env={"BFL_API_KEY": "bfl-wrong-key-123456", "BFL_BASE_URL": bfl.url}, config_yaml=CONFIG)
    r = gw.http.post("/v1/images/generations", json={"model": "flux-dev", "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", r.text
    quick = CONFIG.replace("poll_interval_s: 0.02", "poll_interval_s: 0.02, timeout_s: 0.3")
    slow = inprocess_gateway(env={"BFL_API_KEY": KEY, "BFL_BASE_URL": bfl.url}, config_yaml=quick)
    st(bfl).fail_next(Fault(delay_s=3, passthrough=True, match="/v1/flux"))
    r = slow.http.post("/v1/images/generations", json={"model": "flux-dev", "prompt": "x"})
    assert r.status_code == 504 and r.json()["error"]["type"] == "timeout", r.text
    gw.assert_secret_absent("bfl-wrong-key-123456")
    slow.assert_secret_absent(KEY)


def test_a_polling_url_on_another_host_is_never_sent_the_key(inprocess_gateway: InProcessFactory) -> None:
    other = fake_bfl.start(BflState(api_key=KEY))
    try:
        srv = fake_bfl.start(BflState(api_key=KEY, polling_base=other.url.replace("127.0.0.1", "localhost")))
        try:
            gw = inprocess_gateway(env={"BFL_API_KEY": KEY, "BFL_BASE_URL": srv.url}, config_yaml=CONFIG)
            r = gw.http.post("/v1/images/generations", json={"model": "flux-dev", "prompt": "x"})
            assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_bad_answer", r.text
            assert "localhost" in r.json()["error"]["message"]
            assert st(srv).submits == 1 and not st(other).requests and not st(srv).polls
        finally:
            srv.stop()
    finally:
        other.stop()
