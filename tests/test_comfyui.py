"""ComfyUI through the Images API (official SDK, raw HTTP), against the fake HTTP + WebSocket server on
127.0.0.1: the built-in graph, workflow routes (mapping, validation at load, reload), edits via
/upload/image, progress and binary previews, the websocket dropping, errors, one GPU per instance,
deployments, cancel, the key kept secret and readiness."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from PIL import Image

from image_gateway.core.settings import ConfigError
from tests.conftest import InProcessFactory
from tests.inprocess import InProcessGateway, config
from tests.upstreams import fake_comfyui
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_comfyui import ComfyState
from tests.waits import wait_until

KEY = "sk-comfy-proxy-SECRET-5b7d9e"
ADMIN = "gw-admin-comfy-123456"
WORKFLOW: dict[str, Any] = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
    "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "default prompt", "clip": ["1", 1]}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly", "clip": ["1", 1]}},
    "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 4, "cfg": 6.5, "sampler_name": "euler",
                                               "scheduler": "karras", "denoise": 1.0, "model": ["1", 0],
                                               "positive": ["2", 0], "negative": ["3", 0],
                                               "latent_image": ["4", 0]}},
    "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    "7": {"class_type": "SaveImage", "inputs": {"filename_prefix": "flow", "images": ["6", 0]}},
    "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
}
EDIT_WORKFLOW: dict[str, Any] = {
    **WORKFLOW,
    "5": {**WORKFLOW["5"], "inputs": {**WORKFLOW["5"]["inputs"], "latent_image": ["11", 0], "denoise": 0.6}},
    "11": {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["1", 2]}},
}
ROUTES = """
router: {retries: 0, cooldown_failures: 1000}
routes:
  - name: flow
    provider: comfyui
    workflow: flow.json
    inputs: {prompt: "2.text", seed: "5.seed", width: "4.width", height: "4.height", n: "4.batch_size",
             steps: "5.steps"}
  - {name: flow-edit, provider: comfyui, workflow: edit.json, inputs: {prompt: "2.text", image: "10.image"}}
  - {name: comfy-sd15, provider: comfyui, checkpoint: v1-5-pruned-emaonly.safetensors}
"""


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    s = fake_comfyui.start()
    yield s
    s.stop()


@pytest.fixture
def comfy(server: FakeServer) -> FakeServer:
    st(server).reset()
    return server


def st(server: FakeServer) -> ComfyState:
    assert isinstance(server.state, ComfyState)
    return server.state


def write_flow(workdir: Path, graph: dict[str, Any] | None = None) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "flow.json").write_text(json.dumps(graph or WORKFLOW))
    (workdir / "edit.json").write_text(json.dumps(EDIT_WORKFLOW))


@pytest.fixture
def gw(inprocess_gateway: InProcessFactory, comfy: FakeServer, tmp_path: Path) -> InProcessGateway:
    write_flow(tmp_path / "inproc0")
    return inprocess_gateway(env={"COMFYUI_BASE_URL": comfy.url, "ADMIN_API_KEY": ADMIN}, config_yaml=ROUTES)


def graphs(comfy: FakeServer) -> list[dict[str, Any]]:
    return [b["prompt"] for b in st(comfy).prompt_bodies()]


def events_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


def test_builtin_graph_uses_the_first_checkpoint_and_the_request(gw: InProcessGateway, comfy: FakeServer) -> None:
    res = gw.openai().images.generate(model="comfyui", prompt="a red barn", n=2, size="768x512",
                                      response_format="b64_json", extra_body={"negative_prompt": "fog", "steps": 3})
    (g,) = graphs(comfy)
    assert g["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"  # first of /object_info
    assert g["6"]["inputs"]["text"] == "a red barn" and g["7"]["inputs"]["text"] == "fog"
    assert (g["5"]["inputs"]["width"], g["5"]["inputs"]["height"], g["5"]["inputs"]["batch_size"]) == (768, 512, 2)
    assert g["3"]["inputs"]["steps"] == 3 and g["3"]["class_type"] == "KSampler"
    assert st(comfy).prompt_bodies()[0]["client_id"] in st(comfy).ws_clients  # socket first, then the prompt
    assert res.size == "768x512" and res.data and len(res.data) == 2
    for d in res.data:
        assert d.b64_json and Image.open(io.BytesIO(base64.b64decode(d.b64_json))).size == (96, 64)
    gw.openai().images.generate(model="comfy-sd15", prompt="x", extra_body={"steps": 1})
    assert graphs(comfy)[1]["4"]["inputs"]["ckpt_name"] == "v1-5-pruned-emaonly.safetensors"


def test_stream_relays_progress_and_binary_previews(gw: InProcessGateway, comfy: FakeServer) -> None:
    r = gw.http.post("/v1/images/generations", json={"model": "comfyui", "prompt": "a comet", "stream": True,
                                                      "partial_images": 3, "steps": 8})
    assert r.status_code == 200
    events = events_of(r.text)
    partials = [e for e in events if e["type"] == "image_generation.partial_image"]
    assert len(partials) == 3 and events[-1]["type"] == "image_generation.completed"
    Image.open(io.BytesIO(base64.b64decode(partials[0]["b64_json"]))).load()  # the preview frame's image
    assert all(0 <= p["progress"] < 100 for p in partials) and partials[-1]["progress"] > partials[0]["progress"]


def test_workflow_route_maps_inputs_and_keeps_the_rest(gw: InProcessGateway, comfy: FakeServer) -> None:
    gw.openai().images.generate(model="flow", prompt="a fox")
    gw.openai().images.generate(model="flow", prompt="a fox", size="640x448", extra_body={"seed": 99})
    a, b = graphs(comfy)
    assert a["2"]["inputs"]["text"] == "a fox" and a["3"]["inputs"]["text"] == "ugly"  # not mapped: kept
    assert (a["4"]["inputs"]["width"], a["5"]["inputs"]["steps"], a["5"]["inputs"]["cfg"]) == (512, 4, 6.5)
    assert a["5"]["inputs"]["seed"] != 7  # random per request unless given
    assert b["5"]["inputs"]["seed"] == 99 and (b["4"]["inputs"]["width"], b["4"]["inputs"]["height"]) == (640, 448)


def test_edit_uploads_the_image_and_feeds_the_load_image_node(gw: InProcessGateway, comfy: FakeServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 200, 0)).save(buf, "PNG")
    res = gw.openai().images.edit(model="flow-edit", prompt="make it night",
                                  image=("in.png", buf.getvalue(), "image/png"), response_format="b64_json")
    assert res.data and res.data[0].b64_json
    (name,) = st(comfy).uploads
    assert st(comfy).uploads[name] == buf.getvalue() and graphs(comfy)[0]["10"]["inputs"]["image"] == name
    with pytest.raises(openai.BadRequestError) as e:  # a text-to-image graph has no image input
        gw.openai().images.edit(model="flow", prompt="x", image=("in.png", buf.getvalue(), "image/png"))
    assert "image input" in str(e.value)


@pytest.mark.parametrize(("graph_change", "inputs", "why"), [
    (None, '{prompt: "2.text", seed: "99.seed"}', "no node '99'"),
    (None, '{prompt: "2.text", seed: "5.noise"}', "has no input 'noise'"),
    ({"nodes": [], "links": []}, '{prompt: "2.text"}', "UI format"),
    (None, '{seed: "5.seed"}', "must map `prompt`"),
])
def test_workflow_is_checked_when_the_config_loads(tmp_path: Path, graph_change: Any, inputs: str, why: str) -> None:
    write_flow(tmp_path, graph_change)
    yaml = f"routes:\n  - {{name: bad, provider: comfyui, workflow: flow.json, inputs: {inputs}}}\n"
    with pytest.raises(ConfigError) as e:
        config(tmp_path, {}, yaml)
    assert why in str(e.value) and "route bad" in str(e.value)


def test_reload_picks_up_a_changed_workflow(inprocess_gateway: InProcessFactory, comfy: FakeServer,
                                           tmp_path: Path) -> None:
    write_flow(tmp_path / "inproc0")
    # (a reload re-reads the process environment, so this gateway's upstream address is in its YAML)
    gw = inprocess_gateway(env={"ADMIN_API_KEY": ADMIN},
                           config_yaml=ROUTES + f"providers:\n  comfyui: {{base_url: \"{comfy.url}\"}}\n")
    gw.openai().images.generate(model="flow", prompt="one")
    changed = json.loads(json.dumps(WORKFLOW))
    changed["3"]["inputs"]["text"] = "watermark, text"
    write_flow(gw.workdir, changed)
    r = gw.http.post("/admin/reload", headers={"Authorization": f"Bearer {ADMIN}"})
    assert r.status_code == 200, r.text
    gw.openai().images.generate(model="flow", prompt="two")
    assert [g["3"]["inputs"]["text"] for g in graphs(comfy)] == ["ugly", "watermark, text"]


def test_validation_and_execution_errors(gw: InProcessGateway, comfy: FakeServer) -> None:
    st(comfy).checkpoints = ["only-this.safetensors"]
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.generate(model="comfy-sd15", prompt="x")
    assert e.value.code == "invalid_workflow" and "ckpt_name" in str(e.value) and "not in" in str(e.value)
    st(comfy).reset()
    st(comfy).fail_node = "3"
    with pytest.raises(openai.APIStatusError) as e2:
        gw.openai().images.generate(model="comfyui", prompt="x")
    assert e2.value.status_code == 502 and "OutOfMemoryError" in str(e2.value) and "node 3" in str(e2.value)
    with pytest.raises(openai.BadRequestError):  # the built-in graph maps n; a workflow without it refuses n > 1
        gw.openai().images.generate(model="flow", prompt="x", n=20)


def test_websocket_drop_falls_back_to_polling_history(gw: InProcessGateway, comfy: FakeServer) -> None:
    st(comfy).drop_ws_after = 2
    st(comfy).step_s = 0.05
    res = gw.openai().images.generate(model="comfyui", prompt="x", extra_body={"steps": 30},
                                      response_format="b64_json")
    assert res.data and res.data[0].b64_json
    assert st(comfy).paths().count("/queue") >= 1  # polled: not in history yet, still queued or running


def test_one_gpu_per_instance_queue_then_429(inprocess_gateway: InProcessFactory, comfy: FakeServer) -> None:
    yaml = "router: {retries: 0}\nproviders:\n  comfyui: {queue_size: 1, retry_after_s: 3}\n"
    gw = inprocess_gateway(env={"COMFYUI_BASE_URL": comfy.url}, config_yaml=yaml)
    st(comfy).step_s = 0.05
    results: list[Any] = []

    def run() -> None:
        try:
            results.append(gw.openai().images.generate(model="comfyui", prompt="x", extra_body={"steps": 8}))
        except openai.APIStatusError as e:
            results.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    errors = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(results) == 3 and len(errors) == 1
    assert errors[0].status_code == 429 and errors[0].code == "queue_full"
    assert errors[0].response.headers["retry-after"] == "3"
    assert st(comfy).max_outstanding == 1  # the gateway never queued a second prompt on the GPU


def test_deployments_are_balanced(inprocess_gateway: InProcessFactory, comfy: FakeServer) -> None:
    other = fake_comfyui.start()
    try:
        yaml = (f"routes:\n  - name: farm\n    provider: comfyui\n    deployments:\n"
                f"      - {{name: a, base_url: \"{comfy.url}\"}}\n      - {{name: b, base_url: \"{other.url}\"}}\n")
        gw = inprocess_gateway(config_yaml=yaml)
        st(comfy).step_s = st(other).step_s = 0.05
        done: list[Any] = []
        threads = [threading.Thread(target=lambda: done.append(gw.openai().images.generate(
            model="farm", prompt="x", extra_body={"steps": 8}))) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(done) == 2 and len(st(comfy).prompts) == 1 and len(st(other).prompts) == 1
    finally:
        other.stop()


def test_cancelling_a_task_deletes_or_interrupts_it(gw: InProcessGateway, comfy: FakeServer) -> None:
    st(comfy).step_s = 0.2
    st(comfy).drop_ws_after = 1  # the task is polled from then on (a handle the gateway can cancel)
    r = gw.http.post("/v1/images/generations", headers={"Prefer": "respond-async"},
                     json={"model": "comfyui", "prompt": "x", "steps": 50})
    assert r.status_code == 202, r.text
    task = r.json()["id"]
    wait_until(lambda: st(comfy).running is not None, what="the prompt running")
    assert gw.http.delete(f"/v1/images/tasks/{task}").status_code in (200, 202)
    wait_until(lambda: "/interrupt" in st(comfy).paths(), what="POST /interrupt")


def test_key_is_sent_as_bearer_and_never_leaks(inprocess_gateway: InProcessFactory, comfy: FakeServer) -> None:
    st(comfy).api_key = KEY
    gw = inprocess_gateway(env={"COMFYUI_BASE_URL": comfy.url, "COMFYUI_API_KEY": KEY, "ADMIN_API_KEY": ADMIN})
    res = gw.openai().images.generate(model="comfyui", prompt="x", extra_body={"steps": 2},
                                      response_format="b64_json")
    assert res.data and all(r.headers.get("authorization") == f"Bearer {KEY}" for r in st(comfy).requests)
    gw.remember(gw.http.get("/ready", headers={"Authorization": f"Bearer {ADMIN}"}).text)
    st(comfy).api_key = "sk-rotated-key-000000"
    with pytest.raises(openai.AuthenticationError):
        gw.openai().images.generate(model="comfyui", prompt="x")
    gw.assert_secret_absent(KEY)


def test_ready_reflects_an_unreachable_instance(inprocess_gateway: InProcessFactory) -> None:
    server = fake_comfyui.start()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    gw = inprocess_gateway(env={"COMFYUI_BASE_URL": server.url, "ADMIN_API_KEY": ADMIN, "PROBE_INTERVAL_S": "0.05"})
    try:
        assert "comfyui" in gw.http.get("/ready", headers=auth).json()["providers"]
    finally:
        server.stop()
    def gone() -> dict[str, Any] | None:
        b: dict[str, Any] = gw.http.get("/ready", headers=auth).json()
        return b if "comfyui" in b["unreachable"] else None

    body = wait_until(gone, timeout=10, what="the probe to see ComfyUI gone")
    assert body is not None
    assert "comfyui" not in body["providers"]
