"""midjourney-proxy wire details (docs/protocols.md §2): the prompt we send, submit codes, task fields.

Pure functions, no I/O, so each rule is testable on its own.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..core.fields import int_field
from ..core.types import ImageRequest
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact
from ..media.sizes import SIZE_RE, parse_ratio_text

# A `--name` parameter in a prompt, and the names that mean the same thing.
_PARAM = re.compile(r"(?:^|\s)--([A-Za-z][A-Za-z0-9_-]*)")
_CANON = {"version": "v", "niji": "v", "aspect": "ar", "quality": "q", "stylize": "s"}
MAX_SEED = 4294967295


def prompt_params(prompt: str) -> set[str]:
    """Canonical names of the `--` parameters a prompt already carries (`--aspect` → `ar`, `--niji` → `v`)."""
    return {_CANON.get(m.lower(), m.lower()) for m in _PARAM.findall(prompt)}


def aspect_ratio(size: str | None, ratio: Any = None) -> str | None:
    """`1536x1024` → `3:2` (reduced); any WxH is accepted; `auto`/None → the `ratio` hint, if well formed."""
    m = SIZE_RE.match(size) if size else None
    wh = (int(m.group(1)), int(m.group(2))) if m else parse_ratio_text(ratio) if isinstance(ratio, str) else None
    if wh is None or wh[0] <= 0 or wh[1] <= 0:
        return None
    g = math.gcd(*wh)
    return f"{wh[0] // g}:{wh[1] // g}"


def seed_of(raw: Any) -> int | None:
    """The `--seed` for a `seed` field: None when absent or negative (-1 means "random" to several
    clients); 400 unless an integer (or a string of ASCII digits) up to MAX_SEED."""
    value = int_field(raw, "seed", max_abs=MAX_SEED)
    if value is None:
        return None
    return value if value >= 0 else None


def build_prompt(req: ImageRequest, version: str) -> str:
    """The caller's prompt plus the route's version and the mapped OpenAI parameters.

    Parameters already in the prompt win: a prompt with `--ar 16:9` keeps it whatever `size` says,
    one with `--niji 6` or `--v 6` keeps its own version. `quality` high/hd → `--q 2`, `style`
    natural → `--style raw`; other values have no Midjourney equivalent and are ignored.
    """
    prompt = " ".join(req.prompt.split())
    have = prompt_params(prompt)
    add: list[str] = []
    ar = aspect_ratio(req.size, req.extra.get("aspect_ratio"))
    if ar and ar != "1:1" and "ar" not in have:
        add.append(f"--ar {ar}")
    if req.quality in ("high", "hd") and "q" not in have:
        add.append("--q 2")
    if req.style == "natural" and "style" not in have:
        add.append("--style raw")
    seed = seed_of(req.extra.get("seed"))
    if seed is not None and "seed" not in have:
        add.append(f"--seed {seed}")
    neg = req.extra.get("negative_prompt")
    if isinstance(neg, str) and neg.strip() and "no" not in have:
        add.append("--no " + " ".join(neg.replace("--", " ").split()))
    if version and "v" not in have:
        add.append(version)
    return " ".join([prompt, *add])


def task_id_of(result: Any) -> str | None:
    """`result` is the task id: a string (MJ-NZK), sometimes a number or a list (MJ-TAI)."""
    if isinstance(result, list):
        result = result[0] if result else None
    if isinstance(result, int) and not isinstance(result, bool):
        return str(result)
    return result if isinstance(result, str) and result else None


def submit_task_id(status: int, data: Any, raw: bytes, secrets: list[str | None],
                   retry_after_s: float | None = None) -> str:
    """The accepted task's id from a submit answer, or the GatewayError that answer means.

    Code 23 (queue full) is a capacity answer. midjourney-proxy names no Retry-After, so none is
    invented unless the `retry_after_s` option sets one: the router then pauses the deployment for a
    short back-off and says how long in its own Retry-After."""
    if status in (401, 403):
        return _raise(GatewayError(f"The Midjourney proxy rejected the key (HTTP {status}).", status=status,
                                   type="invalid_request_error", code="invalid_api_key"))
    if not isinstance(data, dict) or not isinstance(data.get("code"), int):
        snippet = redact(raw[:200].decode("utf-8", "replace").strip(), secrets)
        tail = f": {snippet}" if snippet and not snippet.startswith("<") else ""
        return _raise(UpstreamError(f"The Midjourney proxy answered HTTP {status} without a submit result{tail}",
                                    retryable=status >= 500))
    code: int = data["code"]
    desc = redact(str(data.get("description") or ""), secrets)
    raw_props = data.get("properties")
    props: dict[str, Any] = raw_props if isinstance(raw_props, dict) else {}
    tid = task_id_of(data.get("result"))
    if code in (1, 21, 22) and tid:
        return tid  # 22 = queued upstream; 21 = the task already exists (poll that one)
    if code == 23:
        headers = {"Retry-After": str(math.ceil(retry_after_s))} if retry_after_s is not None else None
        return _raise(GatewayError(f"The Midjourney queue is full; try again later (code 23: {desc}).", status=429,
                                   type="rate_limit_exceeded", code="upstream_queue_full", headers=headers,
                                   retryable=True, capacity=True))
    if code == 24:
        word = str(props.get("bannedWord") or "").strip()
        named = f" the banned word '{word}'" if word else " a banned word"
        return _raise(InvalidRequest(f"Midjourney rejected the prompt: it contains{named} (code 24: {desc}).",
                                     param="prompt", code="content_policy_violation"))
    if code == 3:
        return _raise(UpstreamError(f"The Midjourney proxy has no usable account or no such task (code 3: {desc}).",
                                    status=503, code="upstream_unavailable", retryable=True))
    if code == 4:
        return _raise(InvalidRequest(f"The Midjourney proxy refused the parameters (code 4: {desc}).",
                                     code="invalid_value"))
    if code == 9:
        return _raise(UpstreamError(f"The Midjourney proxy failed to submit the task (code 9: {desc}).",
                                    code="upstream_error", retryable=True))
    return _raise(UpstreamError(f"The Midjourney proxy answered an unexpected submit code {code} ({desc}).",
                                code="upstream_error"))


def _raise(err: GatewayError) -> str:
    raise err


def status_of(task: dict[str, Any]) -> str:
    s = task.get("status")
    return s.upper() if isinstance(s, str) else "NOT_START"


def percent_of(task: dict[str, Any]) -> int:
    """`"37%"` → 37; SUCCESS → 100; anything unreadable → 0."""
    if status_of(task) == "SUCCESS":
        return 100
    p = task.get("progress")
    if isinstance(p, int | float) and not isinstance(p, bool):
        return max(0, min(100, int(p)))
    if isinstance(p, str):
        m = re.match(r"\s*(\d{1,3})", p)
        if m:
            return max(0, min(100, int(m.group(1))))
    return 0


def image_urls_of(task: dict[str, Any]) -> list[str]:
    """The MJ-TAI fork's four individual images (`imageUrls: [{url, thumbnail}]`), when present."""
    out = []
    for item in task.get("imageUrls") or ():
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.startswith(("http://", "https://")):
            out.append(url)
    return out


def final_prompt_of(task: dict[str, Any]) -> str | None:
    props = task.get("properties")
    fp = props.get("finalPrompt") if isinstance(props, dict) else None
    for v in (fp, task.get("promptEn"), task.get("prompt")):
        if isinstance(v, str) and v:
            return v
    return None


def task_failure(task: dict[str, Any], secrets: list[str | None]) -> GatewayError:
    reason = redact(str(task.get("failReason") or "no reason given"), secrets)
    if status_of(task) == "CANCEL":
        return UpstreamError(f"The Midjourney task {task.get('id')} was cancelled upstream: {reason}",
                             code="upstream_cancelled")
    return UpstreamError(f"The Midjourney task {task.get('id')} failed: {reason}", code="upstream_task_failed",
                         retryable=True)
