"""Client conformance, JavaScript side: the openai Node SDK and the Vercel AI SDK 6 (`ai` with
`@ai-sdk/openai` pointed at the gateway, and `@ai-sdk/openai-compatible`), run for real by node
(tests/clients/node/clients.mjs, packages installed by `make test` with `npm ci`) against a gateway
process on 127.0.0.1 (node opens its own connections) with fake upstreams, over the demo, OpenAI,
Midjourney, GrsAi and Z-Image routes. Every case runs in one node process, once per module.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients.harness import EDIT_ROUTES, GW_KEY, ROUTES, Stack, check_keys, image, png, process_stack

NODE_DIR = Path(__file__).parent / "clients" / "node"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_DIR / "node_modules").is_dir(),
    reason="node and tests/clients/node/node_modules (make test runs npm ci) are needed")


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with process_stack(tmp_path_factory.mktemp("clients-node")) as s:
        yield s
        check_keys(s)


def run_node(st: Stack, cases: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Run the cases in one node process; results by case id."""
    spec = {"baseURL": st.gw.base_url, "apiKey": GW_KEY, "png": base64.b64encode(png()).decode(), "cases": cases}
    done = subprocess.run(["node", "clients.mjs", json.dumps(spec)], cwd=NODE_DIR, capture_output=True, text=True,
                          timeout=240, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    st.gw.remember(done.stdout, done.stderr)
    return {r["id"]: r for r in json.loads(done.stdout)}


def ok(res: dict[str, Any]) -> dict[str, Any]:
    assert res["ok"], res
    return res


@pytest.fixture(scope="module")
def results(st: Stack) -> dict[str, dict[str, Any]]:
    """Every case once, in one node process (node's start-up and the SDKs' imports cost ~0.5 s)."""
    cases: list[dict[str, Any]] = []
    for m in ROUTES:
        cases += [
            {"id": f"openai.generate:{m}", "kind": "openai.generate", "model": m, "prompt": "a lighthouse"},
            {"id": f"openai.stream:{m}", "kind": "openai.stream", "model": m, "prompt": "a koi pond"},
            {"id": f"aisdk.openai:{m}", "kind": "aisdk.openai", "model": m, "prompt": "a heron", "n": 2,
             "size": "1024x1024"},
            # dall-e-3 takes n=1 only (as OpenAI's): the SDK is told so, as @ai-sdk/openai knows by itself.
            {"id": f"aisdk.compatible:{m}", "kind": "aisdk.compatible", "model": m, "prompt": "a heron", "n": 3,
             "maxImagesPerCall": 1 if m == "dall-e-3" else 2},
            {"id": f"openai.chat:{m}", "kind": "openai.chat", "model": m, "stream": True,
             "messages": [{"role": "user", "content": "a tiny robot"}], "params": {"modalities": ["image", "text"]}},
        ]
    for m in EDIT_ROUTES:
        mask = m != "nano-banana"  # GrsAi takes no mask (a clear 400, checked below)
        cases += [
            {"id": f"openai.edit:{m}", "kind": "openai.edit", "model": m, "prompt": "make it blue", "images": 2},
            {"id": f"aisdk.openai.edit:{m}", "kind": "aisdk.openai.edit", "model": m, "prompt": "make it blue",
             "images": 2, "mask": mask},
            {"id": f"aisdk.compatible.edit:{m}", "kind": "aisdk.compatible.edit", "model": m,
             "prompt": "make it blue", "images": 1, "mask": mask},
        ]
    cases.append({"id": "aisdk.compatible.edit.mask:nano-banana", "kind": "aisdk.compatible.edit",
                  "model": "nano-banana", "prompt": "x", "mask": True})
    cases.append({"id": "openai.edit:Z-Image", "kind": "openai.edit", "model": "Z-Image", "prompt": "x"})
    cases.append({"id": "aisdk.compatible.edit:Z-Image", "kind": "aisdk.compatible.edit", "model": "Z-Image",
                  "prompt": "x"})
    return run_node(st, cases)


@pytest.mark.parametrize("model", ROUTES)
def test_openai_node_sdk_generate(st: Stack, results: dict[str, dict[str, Any]], model: str) -> None:
    (item,) = ok(results[f"openai.generate:{model}"])["data"]
    assert item["b64_json"] and item["url"] and st.is_own(item["url"]), item["url"]
    assert st.fetch(item["url"]) == base64.b64decode(item["b64_json"])


@pytest.mark.parametrize("model", EDIT_ROUTES)
def test_openai_node_sdk_edit_with_two_images(st: Stack, results: dict[str, dict[str, Any]], model: str) -> None:
    (item,) = ok(results[f"openai.edit:{model}"])["data"]
    assert item["b64_json"] and st.is_own(item["url"])
    image(item["b64_json"])


def test_edits_on_a_text_only_route_fail_with_a_clear_400(results: dict[str, dict[str, Any]]) -> None:
    for case in ("openai.edit:Z-Image", "aisdk.compatible.edit:Z-Image"):
        res = results[case]
        assert not res["ok"] and res["status"] == 400, res
        assert "does not support image edits" in res["error"], res
    res = results["aisdk.compatible.edit.mask:nano-banana"]
    assert not res["ok"] and res["status"] == 400 and "mask" in res["error"], res


@pytest.mark.parametrize("model", ROUTES)
def test_openai_node_sdk_stream(results: dict[str, dict[str, Any]], model: str) -> None:
    events = ok(results[f"openai.stream:{model}"])["events"]
    assert events[-1]["type"] == "image_generation.completed" and events[-1]["b64_len"] > 0, events
    assert sum(e["type"] == "image_generation.partial_image" for e in events) <= 2


@pytest.mark.parametrize("model", ROUTES)
def test_ai_sdk_openai_provider(results: dict[str, dict[str, Any]], model: str) -> None:
    # @ai-sdk/openai: no response_format for gpt-image-*, b64_json for the rest; requires data[].b64_json.
    res = ok(results[f"aisdk.openai:{model}"])
    assert len(res["images"]) == 2
    for f in res["images"]:
        image(f["base64"])


@pytest.mark.parametrize("model", ROUTES)
def test_ai_sdk_openai_compatible_provider_splits_n(results: dict[str, dict[str, Any]], model: str) -> None:
    res = ok(results[f"aisdk.compatible:{model}"])
    assert len(res["images"]) == 3 and res["responses"] == (3 if model == "dall-e-3" else 2)  # ceil(n / max)
    for f in res["images"]:
        image(f["base64"])


@pytest.mark.parametrize("model", EDIT_ROUTES)
def test_ai_sdk_edits_with_mask(results: dict[str, dict[str, Any]], model: str) -> None:
    for kind in ("aisdk.openai.edit", "aisdk.compatible.edit"):
        res = ok(results[f"{kind}:{model}"])
        assert len(res["images"]) == 1
        image(res["images"][0]["base64"])


def test_ai_sdk_edit_reaches_the_upstream_as_image_array_and_mask(st: Stack,
                                                                   results: dict[str, dict[str, Any]]) -> None:
    edits = [r for r in st.ups["openai"].state.requests if r.path.endswith("/images/edits")]
    assert any(r.extra.get("image_count") == 2 and r.extra.get("has_mask") for r in edits), \
        [r.extra for r in edits]


@pytest.mark.parametrize("model", ROUTES)
def test_chat_stream_carries_the_hosted_url_never_a_data_uri(st: Stack, results: dict[str, dict[str, Any]],
                                                             model: str) -> None:
    res = ok(results[f"openai.chat:{model}"])
    (img,) = res["images"]
    url = img["image_url"]["url"]
    assert st.is_own(url) and url in res["content"]
    assert res["longest_chunk"] < 128 * 1024 and "data:image" not in json.dumps(res)
    image(st.fetch(url))
