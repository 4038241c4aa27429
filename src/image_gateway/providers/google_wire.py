"""Google's Gemini API wire shapes for images (providers/google.py): request bodies, answers, errors.

* Gemini image models, `POST /v1beta/models/{model}:generateContent`: `contents[0].parts` = the prompt text
  and, for edits, `inline_data` image parts; `generationConfig.responseModalities` and
  `generationConfig.imageConfig.{aspectRatio, imageSize}`. The answer's `candidates[0].content.parts[]`
  carry `inlineData {mimeType, data}` (base64); `thought: true` parts are interim drafts. A block is
  `promptFeedback.blockReason` or a candidate `finishReason` of SAFETY, PROHIBITED_CONTENT, IMAGE_SAFETY...
* Imagen, `POST /v1beta/models/{model}:predict`: `instances[0].prompt` and `parameters.{sampleCount,
  aspectRatio, imageSize, personGeneration, includeRaiReason}`; the answer's `predictions[]` carry
  `bytesBase64Encoded` and `mimeType`, or `raiFilteredReason` for a filtered sample (no predictions at all
  when every sample was filtered).
* Errors: `{"error": {"code": 429, "message": "...", "status": "RESOURCE_EXHAUSTED", "details": [...]}}`;
  a bad key is 400 INVALID_ARGUMENT with an ErrorInfo detail `reason: API_KEY_INVALID`; RetryInfo's
  `retryDelay` ("37s") becomes Retry-After.

References: https://ai.google.dev/gemini-api/docs/image-generation, https://ai.google.dev/gemini-api/docs/imagen,
https://ai.google.dev/api/generate-content (FinishReason, BlockReason), https://ai.google.dev/gemini-api/docs/troubleshooting
(error statuses); docs/protocols.md §7 (Google).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from ..core.types import GeneratedImage, ImageRequest
from ..errors import GatewayError, InvalidRequest, UpstreamError, scrub
from ..media.sizes import nearest_ratio_of, parse_ratio_text, requested_shape, tier_of
from .errmap import error

# What each family takes (the image-generation and Imagen pages).
GEMINI_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGEN_RATIOS = ("1:1", "3:4", "4:3", "9:16", "16:9")
GEMINI_TIERS = (("1K", 1024), ("2K", 2048), ("4K", 4096))  # gemini-3-pro-image only
IMAGEN_TIERS = (("1K", 1024), ("2K", 2048))  # Imagen 4 standard and ultra, not fast
IMAGEN_MAX_N = 4
# Finish / block reasons that mean the content policy stopped it (a 400, not an upstream fault).
BLOCKED = frozenset({"SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST",
                     "SPII", "RECITATION", "IMAGE_RECITATION"})


def is_imagen(model: str) -> bool:
    return model.startswith("imagen")


def takes_image_size(model: str) -> bool:
    if is_imagen(model):
        return "fast" not in model
    return model.startswith("gemini-3")  # gemini-2.5-flash-image has one size per ratio


def _ratio(req: ImageRequest, allowed: tuple[str, ...]) -> tuple[str | None, tuple[int, int] | None]:
    """The allowed ratio nearest to what was asked (`aspect_ratio`/`aspectRatio`, else `size`), and the shape."""
    raw = req.extra.get("aspectRatio", req.extra.get("aspect_ratio"))
    if raw is not None and not isinstance(raw, str):
        raise InvalidRequest("'aspect_ratio' must be a string such as \"16:9\".", param="aspect_ratio")
    if isinstance(raw, str) and raw in allowed:
        wh = parse_ratio_text(raw)
        return raw, (1024 * wh[0] // max(wh), 1024 * wh[1] // max(wh)) if wh else None
    shape = requested_shape(req.size, raw)
    return (nearest_ratio_of(*shape, allowed), shape) if shape else (None, None)


def _image_size(req: ImageRequest, model: str, shape: tuple[int, int] | None, tiers: tuple[tuple[str, int], ...],
                default: str | None) -> str | None:
    """imageSize: the caller's `image_size` › the tier nearest the requested size › the route's option."""
    if not takes_image_size(model):
        return None
    raw = req.extra.get("imageSize", req.extra.get("image_size"))
    if raw is not None:
        allowed = [t for t, _ in tiers]
        if raw not in allowed:
            raise InvalidRequest(f"'image_size' must be one of {', '.join(allowed)} for {model}.",
                                 param="image_size", code="invalid_value")
        return str(raw)
    if shape is not None and req.size not in (None, "", "auto"):
        return tier_of(max(shape), tiers)
    return default


def gemini_body(req: ImageRequest, model: str, images: list[tuple[str, str]], o: Any) -> dict[str, Any]:
    """generateContent for one image; `images` are (mime type, base64) edit inputs."""
    parts: list[dict[str, Any]] = [{"text": req.prompt}]
    parts += [{"inline_data": {"mime_type": mime, "data": data}} for mime, data in images]
    image_config: dict[str, Any] = {}
    ratio, shape = _ratio(req, GEMINI_RATIOS)
    if ratio:
        image_config["aspectRatio"] = ratio
    size = _image_size(req, model, shape, GEMINI_TIERS, o.image_size)
    if size:
        image_config["imageSize"] = size
    config: dict[str, Any] = {"responseModalities": list(o.response_modalities)}
    if image_config:
        config["imageConfig"] = image_config
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
    seed = req.extra.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        config["seed"] = seed
    return body


def imagen_body(req: ImageRequest, model: str, o: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"sampleCount": req.n, "includeRaiReason": True}
    ratio, shape = _ratio(req, IMAGEN_RATIOS)
    if ratio:
        params["aspectRatio"] = ratio
    size = _image_size(req, model, shape, IMAGEN_TIERS, o.image_size)
    if size:
        params["imageSize"] = size
    person = req.extra.get("person_generation", req.extra.get("personGeneration", o.person_generation))
    if person is not None:
        if person not in ("dont_allow", "allow_adult", "allow_all"):
            raise InvalidRequest("'person_generation' must be dont_allow, allow_adult or allow_all.",
                                 param="person_generation", code="invalid_value")
        params["personGeneration"] = person
    return {"instances": [{"prompt": req.prompt}], "parameters": params}


def _decode(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw) if raw.strip() else None
    except msgspec.DecodeError:
        return None


def _blocked(reason: str, message: str | None = None) -> GatewayError:
    why = f" ({message})" if message else ""
    return GatewayError(f"Google's safety filters blocked this request: {reason}{why}. Rephrase the prompt.",
                        status=400, type="invalid_request_error", code="content_policy_violation")


def _image(b64: Any, mime: Any) -> GeneratedImage | None:
    if not isinstance(b64, str) or not b64:
        return None
    return GeneratedImage(b64=b64, content_type=mime if isinstance(mime, str) else "image/png")


def gemini_images(raw: bytes) -> tuple[list[GeneratedImage], dict[str, Any] | None]:
    """The final images of a generateContent answer, and its usage; a GatewayError for a block or none."""
    data = _decode(raw)
    if not isinstance(data, dict):
        raise UpstreamError("Google answered with a body that is not JSON", code="upstream_error")
    feedback = data.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        raise _blocked(str(feedback["blockReason"]), feedback.get("blockReasonMessage"))
    candidates = data.get("candidates")
    cand = candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else {}
    content = cand.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    images, texts = [], []
    for p in parts if isinstance(parts, list) else ():
        if not isinstance(p, dict) or p.get("thought"):
            continue
        inline = p.get("inlineData") or p.get("inline_data")
        if isinstance(inline, dict):
            img = _image(inline.get("data"), inline.get("mimeType") or inline.get("mime_type"))
            if img is not None:
                images.append(img)
        elif isinstance(p.get("text"), str):
            texts.append(p["text"])
    reason = str(cand.get("finishReason") or "")
    if not images and reason in BLOCKED:
        raise _blocked(reason, cand.get("finishMessage"))
    if not images:
        said = " ".join(texts).strip()[:300]
        raise UpstreamError("Google returned no image" + (f" (finishReason {reason})" if reason else "")
                            + (f": {said}" if said else ""), code="upstream_no_image")
    usage = data.get("usageMetadata")
    return images, usage if isinstance(usage, dict) else None


def imagen_images(raw: bytes) -> list[GeneratedImage]:
    data = _decode(raw)
    if not isinstance(data, dict):
        raise UpstreamError("Google answered with a body that is not JSON", code="upstream_error")
    preds = data.get("predictions")
    images, filtered = [], []
    for p in preds if isinstance(preds, list) else ():
        if not isinstance(p, dict):
            continue
        img = _image(p.get("bytesBase64Encoded"), p.get("mimeType"))
        if img is not None:
            images.append(img)
        elif p.get("raiFilteredReason"):
            filtered.append(str(p["raiFilteredReason"]))
    if not images:  # every sample filtered: Imagen answers {} or only raiFilteredReason entries
        raise _blocked("IMAGE_SAFETY", "; ".join(filtered)[:300] or None)
    return images


def google_error(status: int, raw: bytes, headers: Mapping[str, str], secrets: list[str | None]) -> GatewayError:
    """A Google error answer as our error: bad key 401, quota 429 (with Retry-After), caller 400, server 502."""
    data = _decode(raw)
    err = data.get("error") if isinstance(data, dict) else None
    err = err if isinstance(err, dict) else {}
    message = str(err.get("message") or f"Google answered HTTP {status}")
    state = str(err.get("status") or "")
    details = [d for d in err.get("details") or () if isinstance(d, dict)]
    reasons = {str(d.get("reason")) for d in details if d.get("reason")}
    delay = next((str(d["retryDelay"]) for d in details if isinstance(d.get("retryDelay"), str)), None)
    retry = {"Retry-After": delay.removesuffix("s").split(".")[0]} if delay else {}
    out: GatewayError
    if status in (401, 403) or reasons & {"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"} or state == "UNAUTHENTICATED":
        out = error("auth", f"Google rejected the API key: {message}")
    elif status == 429:
        out = error("rate", f"Google is rate limiting or out of quota: {message}",
                    retry=retry or ({"Retry-After": headers["Retry-After"]} if "Retry-After" in headers else {}))
    elif status == 404:
        out = error("not_found", f"Google does not know this model: {message}")
    elif 400 <= status < 500:
        out = error("invalid", f"Google refused the request: {message}", code=state.lower() or "invalid_request")
    elif status == 504:
        out = UpstreamError(f"Google did not answer in time: {message}", status=504, code="timeout", retryable=True)
    else:
        out = error("upstream", f"Google upstream error: {message}")
    return scrub(out, secrets)
