"""Alibaba DashScope's image wire formats (docs/protocols.md §13, "Alibaba DashScope"): the synchronous
multimodal-generation body (Qwen-Image), the asynchronous text2image task (Wan), sizes as W*H, task
states and DashScope's `{code, message, request_id}` errors.

Kept apart from the adapter (dashscope.py) so the mapping rules can be read and tested on their own.
"""

from __future__ import annotations

from typing import Any

from ..core.types import GeneratedImage, ImageRequest
from ..errors import GatewayError, InvalidRequest, UpstreamError
from ..media.sizes import fit_pixels, nearest_size_of, requested_shape
from .errmap import Kind, kind_of_status, mapped, summary
from .references import url_or_data_url

SYNC_PATH = "/api/v1/services/aigc/multimodal-generation/generation"
ASYNC_PATH = "/api/v1/services/aigc/text2image/image-synthesis"
TASK_PATH = "/api/v1/tasks/"
# Qwen-Image (and -plus) take these sizes only; 1328*1328 is the default.
QWEN_SIZES = ("1664x928", "1472x1140", "1328x1328", "1140x1472", "928x1664")
WAN_SIDE = (512, 1440)  # wan2.2 / wanx2.1: each side within 512-1440
MAX_SEED = 2147483647
RUNNING = ("PENDING", "RUNNING")


def is_sync(model: str) -> bool:
    """Qwen-Image models (and wan2.6, on the same protocol) answer at once; the others are tasks."""
    return model.startswith(("qwen-image", "wan2.6"))


def size_for(req: ImageRequest, model: str) -> str | None:
    """`W*H` fitted to the model; None: keep the model's default (the edit keeps its input's shape)."""
    shape = requested_shape(req.size, req.extra.get("aspect_ratio"))
    if model.startswith("qwen-image-edit"):
        return None if shape is None else "{}*{}".format(*fit_pixels(*shape, multiple=16, min_side=512,
                                                                    max_side=2048))
    if model.startswith("qwen-image"):
        return nearest_size_of(*(shape or (1328, 1328)), QWEN_SIZES).replace("x", "*")
    w, h = shape or (1024, 1024)
    w, h = fit_pixels(w, h, multiple=8, min_side=WAN_SIDE[0], max_side=WAN_SIDE[1])
    return f"{w}*{h}"


def parameters(req: ImageRequest, model: str, watermark: bool, prompt_extend: bool | None,
               n: int | None) -> dict[str, Any]:
    p: dict[str, Any] = {}
    size = size_for(req, model)
    if size:
        p["size"] = size
    if n is not None:
        p["n"] = n
    negative = req.extra.get("negative_prompt")
    if negative is not None:
        if not isinstance(negative, str):
            raise InvalidRequest("'negative_prompt' must be a string.", param="negative_prompt",
                                 code="invalid_value")
        p["negative_prompt"] = negative
    extend = req.extra.get("prompt_extend", prompt_extend)
    if extend is not None:
        if not isinstance(extend, bool):
            raise InvalidRequest("'prompt_extend' must be true or false.", param="prompt_extend",
                                 code="invalid_value")
        p["prompt_extend"] = extend
    wm = req.extra.get("watermark", watermark)
    if not isinstance(wm, bool):
        raise InvalidRequest("'watermark' must be true or false.", param="watermark", code="invalid_value")
    p["watermark"] = wm
    seed = req.extra.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InvalidRequest(f"'seed' must be a whole number between 0 and {MAX_SEED}.", param="seed",
                                 code="invalid_value")
        p["seed"] = seed
    return p


def sync_body(req: ImageRequest, model: str, watermark: bool, prompt_extend: bool | None) -> dict[str, Any]:
    """Qwen-Image: one user message (edit: its images first, then the instruction)."""
    if req.images and not model.startswith("qwen-image-edit"):
        raise InvalidRequest(f"{model} takes no input image; use qwen-image-edit.", param="image",
                             code="invalid_value")
    content: list[dict[str, str]] = [{"image": url_or_data_url(i)} for i in req.images]
    content.append({"text": req.prompt})
    return {"model": model, "input": {"messages": [{"role": "user", "content": content}]},
            "parameters": parameters(req, model, watermark, prompt_extend, None)}


def async_body(req: ImageRequest, model: str, watermark: bool, prompt_extend: bool | None) -> dict[str, Any]:
    """Wan text-to-image: a task for all n images."""
    if req.images:
        raise InvalidRequest(f"{model} is text-to-image only; use qwen-image-edit for edits.", param="image",
                             code="invalid_value")
    p = parameters(req, model, watermark, prompt_extend, req.n)
    inp: dict[str, Any] = {"prompt": req.prompt}
    if "negative_prompt" in p:  # the task API takes it in `input`
        inp["negative_prompt"] = p.pop("negative_prompt")
    return {"model": model, "input": inp, "parameters": p}


def sync_images(data: Any) -> list[GeneratedImage]:
    output = data.get("output") if isinstance(data, dict) else None
    choices = output.get("choices") if isinstance(output, dict) else None
    images = []
    for choice in choices if isinstance(choices, list) else []:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("image"), str) and part["image"]:
                images.append(GeneratedImage(url=part["image"]))
    if not images:
        raise UpstreamError("DashScope answered without an image.", code="upstream_no_image")
    return images


def task_images(output: dict[str, Any], secrets: list[str | None]) -> list[GeneratedImage]:
    """A SUCCEEDED task's images; results that failed carry {code, message} instead of a URL."""
    results = output.get("results")
    images, first_error = [], None
    for r in results if isinstance(results, list) else []:
        if not isinstance(r, dict):
            continue
        if isinstance(r.get("url"), str) and r["url"]:
            images.append(GeneratedImage(url=r["url"], revised_prompt=r.get("actual_prompt")))
        elif first_error is None and r.get("code"):
            first_error = r
    if not images:
        if first_error is not None:
            raise error_of(200, first_error, b"", {}, secrets)
        raise UpstreamError("DashScope's task succeeded without an image.", code="upstream_no_image")
    return images


def kind_of(code: str, status: int) -> Kind:
    if code.startswith(("DataInspectionFailed", "DataInspection", "IPInfringementSuspect")):
        return "policy"
    if code.startswith("InvalidApiKey"):
        return "auth"
    if code.startswith("Arrearage") or code in ("Throttling.AllocationQuota", "AllocationQuota.FreeTierOnly"):
        return "quota"
    if code.startswith("Throttling"):
        return "rate"
    if code.startswith(("InvalidParameter", "BadRequest", "InvalidURL", "InvalidFile")):
        return "invalid"
    if code.startswith(("ModelNotFound", "Model.AccessDenied")):
        return "not_found"
    if code.startswith("AccessDenied"):
        return "forbidden"
    if code.startswith(("InternalError", "SystemError")):
        return "upstream"
    return kind_of_status(status) if status >= 400 else "upstream"


def error_of(status: int, data: Any, raw: bytes, headers: Any, secrets: list[str | None]) -> GatewayError:
    """DashScope's `{code, message, request_id}` (an answer's or a failed task's) → the caller's error."""
    code = str(data.get("code") or "") if isinstance(data, dict) else ""
    message = str(data.get("message") or "") if isinstance(data, dict) else ""
    if not message:
        message = summary(status, raw)
    return mapped(kind_of(code, status), message, label="DashScope", code=code or None, headers=headers,
                  secrets=secrets)
