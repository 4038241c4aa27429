"""ComfyUI's wire facts for comfyui.py: API-format workflows, the `inputs` mapping, websocket messages,
history entries and error bodies (docs/protocols.md §18).

Sources: ComfyUI's server.py (routes /prompt, /ws, /history/{id}, /view, /upload/image, /queue,
/interrupt, /object_info/{class}; `encode_bytes` and `send_image`: a binary frame is a 4-byte
big-endian event type, 1 = PREVIEW_IMAGE, then a 4-byte image format, 1 = JPEG, 2 = PNG, then the
image), execution.py (`validate_prompt`'s `{type, message, details, extra_info}` errors and
`node_errors`; the execution_start / executing / progress / executed / execution_error /
execution_interrupted messages) and script_examples/websockets_api_example.py (the client flow:
connect /ws?clientId first, POST /prompt with that client_id, wait for `executing` with node null,
read /history/{prompt_id}, fetch each output image from /view).
"""

from __future__ import annotations

import base64
import copy
import struct
from pathlib import Path
from typing import Any

import msgspec

from ..core.types import GeneratedImage
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from .errmap import error
from .http import Answer, retry_after

NAME = "ComfyUI"
PREVIEW_IMAGE = 1
PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}

# The standard checkpoint text-to-image graph (ComfyUI's script_examples/basic_api_example.py, in API format).
BUILTIN_GRAPH: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {
        "seed": 0, "steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ""}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "gateway", "images": ["8", 0]}},
}
BUILTIN_INPUTS: dict[str, str] = {
    "prompt": "6.text", "negative_prompt": "7.text", "seed": "3.seed", "steps": "3.steps", "cfg": "3.cfg",
    "sampler_name": "3.sampler_name", "scheduler": "3.scheduler", "denoise": "3.denoise", "width": "5.width",
    "height": "5.height", "n": "5.batch_size", "checkpoint": "4.ckpt_name",
}


def load_workflow(path: Path) -> dict[str, Any]:
    """An API-format workflow file ("Save (API)"), parsed and shape-checked; ValueError says why not."""
    try:
        data = msgspec.json.decode(path.read_bytes())
    except OSError as e:
        raise ValueError(f"workflow {str(path)!r} cannot be read ({e.strerror})") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"workflow {str(path)!r} is not JSON ({e})") from None
    return checked_graph(data, f"workflow {str(path)!r}")


def checked_graph(data: Any, what: str) -> dict[str, Any]:
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise ValueError(f"{what} is in ComfyUI's UI format; export it with \"Save (API)\" (the API format)")
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{what} must be a JSON object of nodes (ComfyUI's API format)")
    for node_id, node in data.items():
        if not (isinstance(node, dict) and isinstance(node.get("class_type"), str)
                and isinstance(node.get("inputs"), dict)):
            raise ValueError(f"{what}: node {node_id!r} needs a class_type and an inputs object")
    return data


def check_inputs(graph: dict[str, Any], inputs: dict[str, str], what: str) -> None:
    """Every mapped `node.input` exists in the graph."""
    for field, target in inputs.items():
        node_id, dot, name = target.partition(".")
        if not dot or not node_id or not name:
            raise ValueError(f"inputs.{field}: {target!r} must be \"<node id>.<input name>\", e.g. \"6.text\"")
        node = graph.get(node_id)
        if node is None:
            raise ValueError(f"inputs.{field}: {what} has no node {node_id!r}")
        if name not in node["inputs"]:
            raise ValueError(f"inputs.{field}: node {node_id!r} ({node['class_type']}) of {what} has no input "
                             f"{name!r}; it has {', '.join(sorted(node['inputs']))}")


def fill(graph: dict[str, Any], inputs: dict[str, str], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of `graph` with each mapped field that has a value set; the others keep the workflow's."""
    out = copy.deepcopy(graph)
    for field, value in values.items():
        target = inputs.get(field)
        if target is not None and value is not None:
            node_id, _, name = target.partition(".")
            out[node_id]["inputs"][name] = value
    return out


def checkpoints_of(data: Any) -> list[str]:
    """The checkpoint names of GET /object_info/CheckpointLoaderSimple (the old `[[names], {...}]` input
    spec, or the newer `["COMBO", {"options": [names]}]`)."""
    try:
        spec = data["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    except (KeyError, TypeError):
        return []
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return [str(x) for x in spec[0]]
    if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], dict):
        return [str(x) for x in spec[1].get("options") or ()]
    return []


def queue_ids(queue: Any) -> tuple[list[str], list[str]]:
    """GET /queue's running and pending prompt ids (items are [number, prompt_id, prompt, extra, outputs])."""
    def ids(key: str) -> list[str]:
        items = queue.get(key) if isinstance(queue, dict) else None
        return [str(i[1]) for i in items or () if isinstance(i, list) and len(i) > 1]

    return ids("queue_running"), ids("queue_pending")


def preview_of(frame: bytes) -> GeneratedImage | None:
    """A binary websocket frame: a preview image, or None for another binary event."""
    if len(frame) < 8:
        return None
    event, fmt = struct.unpack(">II", frame[:8])
    if event != PREVIEW_IMAGE:
        return None
    return GeneratedImage(b64=base64.b64encode(frame[8:]).decode(), content_type=PREVIEW_FORMATS.get(fmt, "image/jpeg"))


def output_images(entry: dict[str, Any]) -> list[dict[str, str]]:
    """A history entry's output images {filename, subfolder, type}, saved ones ("output") before
    previews ("temp"), in node order."""
    outputs = entry.get("outputs")
    found: list[dict[str, str]] = []
    if isinstance(outputs, dict):
        for node_out in outputs.values():
            for img in (node_out or {}).get("images") or ():
                if isinstance(img, dict) and isinstance(img.get("filename"), str):
                    found.append({"filename": img["filename"], "subfolder": str(img.get("subfolder") or ""),
                                  "type": str(img.get("type") or "output")})
    saved = [i for i in found if i["type"] == "output"]
    return saved or found


def history_state(entry: dict[str, Any]) -> str:
    """"success", "error" or "running" (an entry without `status`, from older servers, is done)."""
    status = entry.get("status")
    if not isinstance(status, dict):
        return "success"
    if status.get("status_str") == "error":
        return "error"
    return "success" if status.get("completed", True) else "running"


def history_error(entry: dict[str, Any], secrets: list[str | None]) -> GatewayError:
    for event, data in (entry.get("status") or {}).get("messages") or ():
        if event == "execution_error" and isinstance(data, dict):
            return execution_error(data, secrets)
        if event == "execution_interrupted":
            return interrupted()
    return UpstreamError(f"{NAME} reported the workflow failed.", code="upstream_error")


def execution_error(data: dict[str, Any], secrets: list[str | None]) -> GatewayError:
    msg = redact(f"{data.get('exception_type', 'error')}: {data.get('exception_message', '')}".strip(), secrets)
    return UpstreamError(f"{NAME} failed in node {data.get('node_id')} ({data.get('node_type')}): {msg[:500]}",
                         code="upstream_error")


def interrupted() -> GatewayError:
    return UpstreamError(f"{NAME} interrupted the workflow (someone pressed Cancel, or POST /interrupt).",
                         code="upstream_interrupted")


def prompt_error(a: Answer, secrets: list[str | None]) -> GatewayError:
    """POST /prompt's refusal: 400 {error: {type, message, details}, node_errors: {id: {errors, class_type}}}."""
    data = a.json()
    if a.status in (401, 403):
        return error("auth", f"{NAME} (or the proxy in front of it) refused the key (COMFYUI_API_KEY), HTTP "
                             f"{a.status}.")
    if a.status == 429:
        return error("rate", f"{NAME} is busy (HTTP 429).", retry=retry_after(a.headers))
    if a.status >= 500 or not isinstance(data, dict):
        return UpstreamError(f"{NAME} answered HTTP {a.status}.", code="upstream_error", retryable=a.status >= 500)
    err = data.get("error")
    parts = []
    if isinstance(err, dict):
        parts.append(str(err.get("message") or err.get("type") or "invalid prompt"))
    elif isinstance(err, str):
        parts.append(err)
    for node_id, ne in (data.get("node_errors") or {}).items():
        if isinstance(ne, dict):
            for e in ne.get("errors") or ():
                if isinstance(e, dict):
                    parts.append(f"node {node_id} ({ne.get('class_type')}): {e.get('message')}: {e.get('details')}")
    return InvalidRequest(redact(f"{NAME} refused the workflow: " + "; ".join(parts), secrets)[:800],
                          code="invalid_workflow")
