"""What an image job looks like as a chat answer: the Markdown message, completion and chunk bodies."""

from __future__ import annotations

import re
from typing import Any

from ..core.types import ImageRequest, ProviderResult
from ..prompt.pipeline import PromptPlan
from ..prompt.ratio import RATIOS, nearest_ratio

_SIZE = re.compile(r"^(\d+)x(\d+)$")
ALT_MAX = 80


def escape_alt(text: str) -> str:
    """Alt text that cannot end the `![...]` early: one line, brackets and backslashes escaped."""
    flat = " ".join(text.split())[:ALT_MAX].strip() or "Generated image"
    return re.sub(r"([\\\[\]])", r"\\\1", flat)


def safe_url(url: str) -> str:
    """A URL that cannot end the `(...)` early."""
    return url.replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")


def _exact_ratio(w: int, h: int) -> str | None:
    r = nearest_ratio(w, h)
    a, _, b = r.partition(":")
    return r if abs((w / h) / (int(a) / int(b)) - 1) < 0.01 else None  # 2048x880 is 21:9, 1000x2048 is not 1:2


def labels(req: ImageRequest, result: ProviderResult, plan: PromptPlan | None) -> tuple[str, str]:
    """(aspect ratio, resolution) as the Markdown shows them; "Custom" for an explicit non-table size."""
    size = result.meta.get("size") or (req.size if req.size not in (None, "auto") else None)
    m = _SIZE.match(str(size or ""))
    resolution = f"{m.group(1)}×{m.group(2)}" if m else str(result.meta.get("image_size") or "auto")
    upstream_ratio = result.meta.get("aspect_ratio")
    if plan is not None and plan.ratio and plan.ratio_source != "size":
        ratio = plan.ratio
    elif isinstance(upstream_ratio, str) and upstream_ratio in RATIOS:
        ratio = upstream_ratio
    elif m:
        ratio = _exact_ratio(int(m.group(1)), int(m.group(2))) or "Custom"
    else:
        ratio = "Custom" if plan is not None and plan.ratio_source == "size" else "auto"
    return ratio, resolution


def markdown(urls: list[str], prompt: str, plan: PromptPlan | None, ratio: str, resolution: str,
             notes: list[str]) -> str:
    """The seed gateway's answer layout: image(s), then how the prompt was handled, ratio, resolution."""
    alt = escape_alt(prompt)
    parts = ["\n\n".join(f"![{alt}]({safe_url(u)})" for u in urls), "\n\n---\n"]
    if plan is not None and plan.enhancement == "enhanced":
        parts.append(f"**✨ Enhanced Prompt:**\n{plan.prompt}\n\n**📝 Original Input:**\n{plan.original}\n\n")
    elif plan is not None and plan.enhancement == "failed":
        why = f" ({plan.reason})" if plan.reason else ""
        parts.append(f"**⚠️ Enhancement failed, using original prompt**{why}\n\n**📝 Prompt:**\n{plan.original}\n\n")
    else:
        parts.append(f"**📝 Prompt:**\n{plan.original if plan is not None else prompt}\n\n")
    for note in notes:
        parts.append(f"_{note}_\n\n")
    parts.append(f"**🎨 Aspect Ratio:** {ratio}\n**📐 Resolution:** {resolution}")
    return "".join(parts)


def usage_of(result: ProviderResult | None) -> dict[str, int]:
    """Chat usage from the upstream's image usage when it reports tokens; zeros otherwise (as the seed)."""
    u = result.usage if result is not None and isinstance(result.usage, dict) else {}
    p, c = u.get("input_tokens"), u.get("output_tokens")
    prompt = p if isinstance(p, int) else 0
    completion = c if isinstance(c, int) else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def image_parts(urls: list[str]) -> list[dict[str, Any]]:
    """OpenRouter's `message.images` (LobeChat and others read it before the Markdown)."""
    return [{"type": "image_url", "image_url": {"url": u}, "index": i} for i, u in enumerate(urls)]


def completion(cid: str, created: int, model: str, content: str, usage: dict[str, int],
               urls: list[str] | None = None) -> dict[str, Any]:
    message = {"role": "assistant", "content": content, "refusal": None, "images": image_parts(urls or [])}
    return {
        "id": cid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": usage,
    }


class Chunks:
    """chat.completion.chunk bodies of one answer (same id, created and model on every chunk)."""

    def __init__(self, cid: str, created: int, model: str, include_usage: bool) -> None:
        self.head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {**self.head, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                          "finish_reason": finish}]}
        if self.include_usage:
            body["usage"] = None  # as OpenAI: null on every chunk but the extra last one
        return body

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return {**self.head, "choices": [], "usage": usage}
