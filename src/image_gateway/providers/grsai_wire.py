"""GrsAi's wire format (docs/protocols.md §3): request bodies, the snapshot stream, failures → our errors.

Kept apart from the adapter (grsai.py) so the mapping rules can be read and tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from ..core.types import GeneratedImage, ImageRequest, InputImage
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from ..media.sizes import nearest_ratio_of, parse_ratio_text, parse_size, tier_of
from .errmap import error
from .references import url_or_data_url

NANO_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "5:4", "4:5", "21:9")
COMPLETION_RATIOS = ("1:1", "2:3", "3:2")  # sora-image / gpt-4o-image `size`
IMAGE_SIZES = ("1K", "2K", "4K")
TIERS = (("1K", 1024), ("2K", 2048), ("4K", 4096))


def fit_ratio(ratio: str, allowed: tuple[str, ...]) -> str:
    """`ratio` when the model takes it, else the closest one it does take (1:2 → 9:16)."""
    if ratio in allowed or ratio == "auto":
        return ratio
    wh = parse_ratio_text(ratio)
    if wh is None:
        raise InvalidRequest(f"'aspect_ratio' must look like 16:9, got {ratio[:40]!r}.", param="aspect_ratio",
                             code="invalid_value")
    return nearest_ratio_of(*wh, allowed)


def aspect_for(req: ImageRequest, allowed: tuple[str, ...]) -> str:
    """aspectRatio / aspect_ratio (the caller's, or the prompt pipeline's) › OpenAI `size` › "auto"."""
    explicit = req.extra.get("aspectRatio") or req.extra.get("aspect_ratio")
    if explicit is not None:
        if not isinstance(explicit, str):
            raise InvalidRequest("'aspect_ratio' must be a string such as \"16:9\".", param="aspect_ratio")
        return fit_ratio(explicit.strip(), allowed)
    if req.size and req.size != "auto":
        w, h = parse_size(req.size, max_side=1 << 16, min_side=1)
        return nearest_ratio_of(w, h, allowed)
    return "auto"


def image_size_for(req: ImageRequest, default: Any) -> str | None:
    """imageSize (1K/2K/4K) for models that take it: explicit › from `size` › quality › route default."""
    explicit = req.extra.get("imageSize") or req.extra.get("image_size")
    if explicit is not None:
        value = str(explicit).strip().upper()
        if value not in IMAGE_SIZES:
            raise InvalidRequest(f"'image_size' must be one of {', '.join(IMAGE_SIZES)}.", param="image_size",
                                 code="invalid_value")
        return value
    if req.size and req.size != "auto":
        return tier_of(max(parse_size(req.size, max_side=1 << 16, min_side=1)), TIERS)
    if req.quality in ("high", "hd"):
        return "2K"
    return str(default) if default else None


def reference_url(img: InputImage) -> str:
    """GrsAi takes http(s) URLs and base64 data URLs in `urls`."""
    return url_or_data_url(img)


def submit_body(req: ImageRequest, model: str, options: Any, poll_mode: bool) -> dict[str, Any]:
    completions = endpoint_for(model, options) == "/v1/draw/completions"
    body: dict[str, Any] = {"model": model, "prompt": req.prompt}
    if completions:
        body["size"] = aspect_for(req, COMPLETION_RATIOS)
    else:
        body["aspectRatio"] = aspect_for(req, NANO_RATIOS)
        takes_size = options.takes_image_size
        if takes_size is None:
            takes_size = model.startswith("nano-banana-pro") or model == "nano-banana-2"
        size = image_size_for(req, options.image_size) if takes_size else None
        if size:
            body["imageSize"] = size
    if req.images:
        body["urls"] = [reference_url(i) for i in req.images]
    if poll_mode:
        body["webHook"] = "-1"
    body["shutProgress"] = options.shut_progress
    return body


def endpoint_for(model: str, options: Any) -> str:
    if options.endpoint:
        return str(options.endpoint)
    return "/v1/draw/nano-banana" if model.startswith("nano-banana") else "/v1/draw/completions"


# --- answers ---------------------------------------------------------------------------------------


class SnapshotParser:
    """Task snapshots out of a byte stream: `data: {..}` SSE lines, `data:{..}` without the space,
    bare JSON lines, and objects glued together with no separator at all (all seen in clients)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> Iterator[dict[str, Any]]:
        self._buf += chunk
        while True:
            start = self._buf.find(b"{")
            if start < 0:
                self._buf.clear()
                return
            end = _object_end(self._buf, start)
            if end < 0:
                del self._buf[:start]
                return
            raw = bytes(self._buf[start:end])
            del self._buf[:end]
            try:
                obj = msgspec.json.decode(raw)
            except msgspec.DecodeError:
                continue
            if isinstance(obj, dict):
                yield obj


def _object_end(buf: bytearray, start: int) -> int:
    depth, in_str, esc = 0, False, False
    for i in range(start, len(buf)):
        c = buf[i]
        if in_str:
            if esc:
                esc = False
            elif c == 0x5C:  # backslash
                esc = True
            elif c == 0x22:
                in_str = False
        elif c == 0x22:
            in_str = True
        elif c == 0x7B:
            depth += 1
        elif c == 0x7D:
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def unwrap(obj: dict[str, Any]) -> dict[str, Any]:
    """A snapshot, whether bare or inside the `{"code","msg","data"}` envelope."""
    data = obj.get("data")
    if "code" in obj and isinstance(data, dict):
        return data
    return obj


def failure(snap: dict[str, Any], secrets: list[str | None]) -> GatewayError:
    reason = str(snap.get("failure_reason") or "error")
    detail = redact(str(snap.get("error") or "").strip() or "no detail given", secrets)
    if "moderation" in reason:
        where = "prompt or input image" if reason.startswith("input") else "generated image"
        return GatewayError(
            f"Your request was rejected by GrsAi's safety system ({reason}: the {where} was flagged): {detail}",
            status=400, type="invalid_request_error", code="content_policy_violation")
    # A task that says FAILED cost nothing: another attempt (or a fallback) may succeed.
    return UpstreamError(f"GrsAi task failed ({reason}): {detail}", code="upstream_error", retryable=True)


def images_of(snap: dict[str, Any]) -> list[GeneratedImage]:
    out: list[GeneratedImage] = []
    results = snap.get("results")
    items = results if isinstance(results, list) else []
    if not items and isinstance(snap.get("url"), str):  # older shape: url at top level
        items = [{"url": snap["url"]}]
    for r in items:
        url = r.get("url") if isinstance(r, dict) else None
        if not isinstance(url, str) or not url:
            continue
        note = r.get("content") if isinstance(r.get("content"), str) and r.get("content") else None
        if url.startswith("data:"):
            head, _, payload = url.partition(",")
            out.append(GeneratedImage(b64=payload, revised_prompt=note,
                                      content_type=head[5:].split(";")[0] or "image/png"))
        else:
            out.append(GeneratedImage(url=url, revised_prompt=note))
    return out


def image_json(img: GeneratedImage) -> dict[str, Any]:
    """A finished image inside a (JSON-stored) poll handle."""
    return {k: v for k, v in (("url", img.url), ("b64", img.b64), ("content_type", img.content_type),
                              ("revised_prompt", img.revised_prompt)) if v is not None}


def image_from_json(d: dict[str, Any]) -> GeneratedImage:
    return GeneratedImage(b64=d.get("b64"), url=d.get("url"), revised_prompt=d.get("revised_prompt"),
                          content_type=d.get("content_type"))


def envelope_error(status: int, data: Any, raw: bytes, secrets: list[str | None]) -> GatewayError:
    """A submit or poll answer that is not a task: bad key, bad request, credits, overload."""
    msg = ""
    if isinstance(data, dict):
        msg = str(data.get("msg") or data.get("message") or data.get("error") or "")
    if not msg:
        text = raw[:200].decode("utf-8", "replace").strip()
        msg = text if text and not text.startswith("<") else f"HTTP {status}"
    msg = redact(msg, secrets)
    if status == 401 or "apikey" in msg.replace(" ", "").lower():
        return error("auth", f"GrsAi rejected the API key: {msg}")
    if status == 429:
        return error("rate", f"GrsAi is rate limiting: {msg}")
    return UpstreamError(f"GrsAi error: {msg}", code="upstream_error", retryable=status >= 500)
