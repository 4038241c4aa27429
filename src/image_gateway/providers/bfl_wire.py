"""Black Forest Labs' wire format (docs/protocols.md §14, "Black Forest Labs"): request bodies per model
family, sizes, and get_result answers → our outcomes. Kept apart from the adapter (bfl.py).

Model families (by the upstream model name, so any `bfl/<model>` works):
* Kontext (`flux-kontext-*`) and Ultra (`flux-pro-1.1-ultra`): `aspect_ratio`, 21:9 … 9:21;
* FLUX.2 (`flux-2-*`): `width`/`height` (>= 64, up to 4 MP), edits with up to 8 `input_image*`
  (klein: 4);
* FLUX.1 (`flux-pro-1.1`, `flux-dev`, `flux-pro`, other names): `width`/`height`, multiples of 32 in
  256-1440; no input images (their `image_prompt` is a style reference, sent as `image_prompt`).
"""

from __future__ import annotations

import base64
from typing import Any

from ..core.types import GeneratedImage, ImageRequest, InputImage
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from ..media.sizes import fit_pixels, nearest_ratio_of, requested_shape

RATIOS = ("21:9", "16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16", "9:21")
# Extra body fields a caller may pass (the SDK's extra_body) and BFL reads; anything else is dropped.
PASSTHROUGH = ("seed", "safety_tolerance", "prompt_upsampling", "steps", "guidance", "raw",
               "image_prompt_strength", "interval")
READY, PENDING = "Ready", "Pending"
MODERATED = ("Request Moderated", "Content Moderated")
FAILED = ("Error", "Failed")
NOT_FOUND = "Task not found"


def family(model: str) -> str:
    if model.startswith("flux-kontext") or model.endswith("-ultra"):
        return "ratio"
    if model.startswith("flux-2"):
        return "flux2"
    return "flux1"


def max_inputs(model: str) -> int:
    fam = family(model)
    if fam == "flux2":
        return 4 if "klein" in model else 8
    return 4 if model.startswith("flux-kontext") else 0


def _image_value(img: InputImage) -> str:
    """BFL takes base64 (no data: prefix) or an http(s) URL it fetches itself."""
    if img.data is not None:
        return base64.b64encode(img.data).decode()
    url = img.url or ""
    if url.startswith("data:"):
        return url.partition(",")[2]
    return url


def shape_fields(req: ImageRequest, model: str) -> tuple[dict[str, Any], str | None]:
    """The size fields for this model family and the size reported back (WxH, or the ratio sent)."""
    extra_w, extra_h = req.extra.get("width"), req.extra.get("height")
    shape = requested_shape(req.size, req.extra.get("aspect_ratio"))
    if family(model) == "ratio":
        if shape is None:
            return {}, None
        ratio = nearest_ratio_of(*shape, RATIOS)
        return {"aspect_ratio": ratio}, ratio
    if isinstance(extra_w, int) and isinstance(extra_h, int) and not isinstance(extra_w, bool):
        shape = (extra_w, extra_h)
    if shape is None:
        return {}, None
    if family(model) == "flux2":
        w, h = fit_pixels(*shape, multiple=32, min_side=64, max_side=2048, max_pixels=4 * 1024 * 1024)
    else:
        w, h = fit_pixels(*shape, multiple=32, min_side=256, max_side=1440)
    return {"width": w, "height": h}, f"{w}x{h}"


def submit_body(req: ImageRequest, model: str, options: Any) -> tuple[dict[str, Any], str | None]:
    body: dict[str, Any] = {"prompt": req.prompt}
    fields, size = shape_fields(req, model)
    body.update(fields)
    if req.images:
        limit = max_inputs(model)
        if limit == 0:
            raise InvalidRequest(f"BFL model {model!r} does not edit images; use flux-kontext-pro, flux-kontext-max "
                                 "or a FLUX.2 model (flux-2-pro, flux-2-flex...).", param="model",
                                 code="unsupported_operation")
        if len(req.images) > limit:
            raise InvalidRequest(f"BFL model {model!r} takes at most {limit} input images.", param="image",
                                 code="too_many_images")
        for i, img in enumerate(req.images):
            body["input_image" if i == 0 else f"input_image_{i + 1}"] = _image_value(img)
    for k in PASSTHROUGH:
        if k in req.extra and req.extra[k] is not None:
            body[k] = req.extra[k]
    if "safety_tolerance" not in body and options.safety_tolerance is not None:
        body["safety_tolerance"] = options.safety_tolerance
    fmt = req.output_format or options.output_format
    if fmt in ("png", "jpeg", "jpg", "webp"):
        body["output_format"] = "jpeg" if fmt == "jpg" else fmt
    return body, size


def status_of(data: Any) -> str:
    s = data.get("status") if isinstance(data, dict) else None
    return s if isinstance(s, str) else ""


def percent_of(data: dict[str, Any]) -> int:
    """`progress` is a fraction (0.42) or, from some proxies, a percentage (42)."""
    p = data.get("progress")
    if not isinstance(p, int | float) or isinstance(p, bool):
        return 0
    value = p * 100 if p <= 1 else p
    return max(0, min(99, int(value)))


def image_of(data: dict[str, Any]) -> GeneratedImage | None:
    result = data.get("result")
    url = result.get("sample") if isinstance(result, dict) else None
    if not isinstance(url, str) or not url.startswith(("http://", "https://", "data:")):
        return None
    prompt = result.get("prompt") if isinstance(result, dict) else None
    return GeneratedImage(url=url, revised_prompt=prompt if isinstance(prompt, str) and prompt else None)


def failure(data: dict[str, Any], task_id: str, secrets: list[str | None]) -> GatewayError:
    status = status_of(data)
    details = data.get("details") or data.get("result")
    why = ""
    if isinstance(details, dict):
        reasons = details.get("Moderation Reasons") or details.get("moderation_reasons") or details.get("error")
        if reasons:
            why = ": " + redact(", ".join(map(str, reasons)) if isinstance(reasons, list) else str(reasons), secrets)
    elif isinstance(details, str) and details:
        why = ": " + redact(details, secrets)
    if status in MODERATED:
        what = "the prompt or input image" if status.startswith("Request") else "the generated image"
        return InvalidRequest(f"BFL's moderation rejected {what} ({status}){why}", code="content_policy_violation")
    if status == NOT_FOUND:
        return UpstreamError(f"BFL no longer knows task {task_id} (Task not found: expired or never created).",
                             code="upstream_task_lost")
    # A failed BFL task is not billed: another attempt (or a fallback) may succeed.
    return UpstreamError(f"BFL task {task_id} failed ({status}){why}", code="upstream_task_failed", retryable=True)
