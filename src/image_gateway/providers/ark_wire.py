"""Volcengine Ark's image generation wire format (docs/protocols.md §12, "Volcengine Ark"): request bodies,
size fitting per model family, answers, the SSE events of a streamed set, and Ark's error codes.

Kept apart from the adapter (ark.py) so the mapping rules can be read and tested on their own.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import msgspec

from ..core.types import GeneratedImage, ImageRequest, InputImage
from ..errors import GatewayError, InvalidRequest, UpstreamError
from ..media.sizes import fit_pixels, requested_shape
from .errmap import Kind, kind_of_status, mapped, summary
from .references import url_or_data_url

TIERS = ("1K", "2K", "4K")
TIER_SIDE = {"1K": 1024, "2K": 2048, "3K": 3072, "4K": 4096}
MAX_SET = 15  # a 4.x set: reference images + generated images
# Total-pixel bounds for a WxH size, by model family (the reference's `size` notes).
PIXELS_4_0 = (1280 * 720, 4096 * 4096)
PIXELS_4_5 = (2560 * 1440, 4096 * 4096)
RATIO_LIMIT = 16.0  # 4.x: width/height within [1/16, 16]


def family(model: str) -> str:
    """"4x" (Seedream 4.0 and later: sets, streams, references), "3t2i", or "edit" (SeedEdit 3.0)."""
    if "seededit" in model:
        return "edit"
    if "seedream-3" in model:
        return "3t2i"
    return "4x"


def _scaled(w: int, h: int, lo: int, hi: int) -> tuple[int, int]:
    """w×h scaled (shape kept, ratio clamped to Ark's range) into [lo, hi] total pixels, sides /16."""
    ratio = min(max(w / h, 1 / RATIO_LIMIT), RATIO_LIMIT)
    area = min(max(w * h, lo), hi)
    nw, nh = math.sqrt(area * ratio), math.sqrt(area / ratio)
    up = w * h < lo  # rounding must not take the area back out of bounds
    rnd = math.ceil if up else math.floor
    return max(16, int(rnd(nw / 16)) * 16), max(16, int(rnd(nh / 16)) * 16)


def size_for(req: ImageRequest, model: str) -> str | None:
    """Ark's `size`: WxH fitted to the model, a 1K/2K/4K tier (`image_size` field), "adaptive" for
    SeedEdit; None to let Ark pick its default."""
    fam = family(model)
    if fam == "edit":
        return "adaptive"
    shape = requested_shape(req.size, req.extra.get("aspect_ratio"))
    tier = req.extra.get("image_size")
    if tier is not None:
        tier = str(tier).strip().upper()
        if fam != "4x" or tier not in TIER_SIDE:
            raise InvalidRequest(f"'image_size' must be one of {', '.join(TIERS)} (Seedream 4.x only).",
                                 param="image_size", code="invalid_value")
    if fam == "3t2i":
        w, h = shape or (1024, 1024)
        w, h = fit_pixels(w, h, multiple=16, min_side=512, max_side=2048)
        return f"{w}x{h}"
    lo, hi = PIXELS_4_5 if ("4-5" in model or "seedream-5" in model) else PIXELS_4_0
    if shape is None:
        return tier or "2K"
    w, h = shape
    if tier is not None:  # the caller's shape at the tier's area
        side = TIER_SIDE[tier]
        lo = hi = min(max(side * side, lo), PIXELS_4_0[1])
    w, h = _scaled(w, h, lo, hi)
    return f"{w}x{h}"


def image_ref(img: InputImage) -> str:
    """Ark takes an http(s) URL or a data URL (`data:image/<fmt>;base64,...`, format in lower case)."""
    return url_or_data_url(img, (img.content_type or "image/png").lower())


def _number(req: ImageRequest, name: str, whole: bool) -> float | int | None:
    v = req.extra.get(name)
    if v is None or v == "":
        return None
    try:
        if isinstance(v, bool):
            raise ValueError
        n = float(v)
        if not math.isfinite(n) or (whole and not n.is_integer()):
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        kind = "a whole number" if whole else "a number"
        raise InvalidRequest(f"'{name}' must be {kind}.", param=name, code="invalid_value") from None
    return int(n) if whole else n


def body(req: ImageRequest, model: str, watermark: bool, stream: bool, per_call_n: int) -> dict[str, Any]:
    """One request body. `per_call_n` > 1 asks a 4.x model for a set of that many."""
    fam = family(model)
    b: dict[str, Any] = {"model": model, "prompt": req.prompt,
                         "response_format": "b64_json" if stream or req.response_format == "b64_json" else "url"}
    size = size_for(req, model)
    if size:
        b["size"] = size
    seed = _number(req, "seed", True)
    if seed is not None:
        b["seed"] = seed
    guidance = _number(req, "guidance_scale", False)
    if guidance is not None:
        b["guidance_scale"] = guidance
    wm = req.extra.get("watermark", watermark)
    if not isinstance(wm, bool):
        raise InvalidRequest("'watermark' must be true or false.", param="watermark", code="invalid_value")
    b["watermark"] = wm
    refs = [image_ref(i) for i in req.images]
    if fam == "edit":
        if len(refs) != 1:
            raise InvalidRequest("SeedEdit takes exactly one 'image' to edit.", param="image", code="invalid_value")
        b["image"] = refs[0]
    elif fam == "3t2i":
        if refs:
            raise InvalidRequest("Seedream 3.0 text-to-image takes no input image; use seedream-4.0 or seededit-3.0.",
                                 param="image", code="invalid_value")
    else:
        if refs:
            b["image"] = refs if len(refs) > 1 else refs[0]
        if len(refs) + per_call_n > MAX_SET:
            raise InvalidRequest(f"Seedream makes at most {MAX_SET} images per set, reference images included.",
                                 param="n", code="invalid_value")
        if per_call_n > 1:
            b["sequential_image_generation"] = "auto"
            b["sequential_image_generation_options"] = {"max_images": per_call_n}
        else:
            b["sequential_image_generation"] = "disabled"
        opts = req.extra.get("optimize_prompt_options")
        if isinstance(opts, dict):
            b["optimize_prompt_options"] = opts
        if stream:
            b["stream"] = True
    return b


def image_of(item: dict[str, Any]) -> GeneratedImage | None:
    url, b64 = item.get("url"), item.get("b64_json")
    if isinstance(b64, str) and b64:
        return GeneratedImage(b64=b64)
    if isinstance(url, str) and url:
        return GeneratedImage(url=url)
    return None


def images_of(data: Any, secrets: list[str | None]) -> tuple[list[GeneratedImage], str | None]:
    """(images, size Ark reports) of a non-streamed answer; a set whose every image failed raises."""
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise UpstreamError("Ark answered without image data.", code="upstream_no_image")
    images, size, first_error = [], None, None
    for item in items:
        if not isinstance(item, dict):
            continue
        img = image_of(item)
        if img is not None:
            images.append(img)
            size = size or item.get("size")
        elif isinstance(item.get("error"), dict) and first_error is None:
            first_error = item["error"]
    if not images:
        if first_error is not None:
            raise error_of(200, {"error": first_error}, b"", {}, secrets)
        raise UpstreamError("Ark answered without image data.", code="upstream_no_image")
    return images, size if isinstance(size, str) else None


def kind_of(code: str, status: int) -> Kind:
    if "SensitiveContentDetected" in code or "RiskDetection" in code:
        return "policy"
    if code == "AuthenticationError":
        return "auth"
    if "Overdue" in code or code.startswith("QuotaExceeded"):
        return "quota"
    if code.startswith(("RateLimitExceeded", "ServerOverloaded")):
        return "rate"
    if code.startswith(("InvalidParameter", "MissingParameter", "InvalidArgument")):
        return "invalid"
    if code.startswith(("InvalidEndpointOrModel", "ModelNotOpen", "InvalidEndpoint.NotFound")):
        return "not_found"
    return kind_of_status(status)


def error_of(status: int, data: Any, raw: bytes, headers: Any, secrets: list[str | None]) -> GatewayError:
    """Ark's `{error: {code, message, param, type}}` (or something else) → the caller's error."""
    err = data.get("error") if isinstance(data, dict) else None
    code = str(err.get("code") or "") if isinstance(err, dict) else ""
    message = str(err.get("message") or "") if isinstance(err, dict) else ""
    if not message:
        message = summary(status, raw)
    param = err.get("param") if isinstance(err, dict) and err.get("param") else None
    return mapped(kind_of(code, status), message, label="Ark", code=code or None,
                  param=str(param) if param else None, headers=headers, secrets=secrets)


class SSE:
    """Ark's stream: `event: <type>` + `data: {...}` blocks, then `data: [DONE]`; the JSON may span
    several lines (the reference shows it pretty-printed), so a block's data lines are joined."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        self._buf += chunk
        while b"\n" in self._buf:
            line, _, self._buf = self._buf.partition(b"\n")
            yield from self._line(line.rstrip(b"\r"))

    def close(self) -> Iterator[dict[str, Any]]:
        if self._buf:
            yield from self._line(self._buf)
            self._buf = b""
        yield from self._line(b"")

    def _line(self, line: bytes) -> Iterator[dict[str, Any]]:
        if line.startswith(b"data:"):
            self._data.append(line[5:].strip())
            return
        if line.strip() and not line.startswith((b"event:", b":", b"id:", b"retry:")):
            self._data.append(line.strip())  # a continuation line of a pretty-printed JSON
            return
        if line.strip():
            return
        payload, self._data = b"".join(self._data), []
        if not payload or payload == b"[DONE]":
            return
        try:
            obj = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            return
        if isinstance(obj, dict):
            yield obj
