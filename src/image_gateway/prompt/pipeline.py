"""The prompt pipeline shared by the chat surface and the Images API (when asked for).

Steps: drop `no-enhance`; take a ratio out of the prompt (only after a trigger word); optionally
enhance through an OpenAI-compatible LLM; choose the ratio (explicit size › user's › LLM's); hand it
to the provider in the form it takes:

* providers with `takes_aspect_ratio = True` (Z-Image, GrsAi) get `extra["aspect_ratio"]` and map it
  to their own sizes (ZIMAGE_SIZES, GrsAi's aspectRatio strings);
* OpenAI routes get the nearest size the model supports (`size`);
* anything else gets `size` with the long side at 1024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from ..core.types import ImageRequest, ProviderResult
from ..errors import InvalidRequest, redact
from ..providers.base import Provider
from .enhance import EnhanceSettings, enhance
from .ratio import parse_ratio, ratio_to_size, strip_no_enhance

if TYPE_CHECKING:
    from ..config import Route
    from ..runtime import Runtime

# Sizes OpenAI's image models accept (docs/protocols.md §1.1), by upstream model prefix.
OPENAI_SIZES: dict[str, tuple[str, ...]] = {
    "dall-e-2": ("1024x1024",),
    "dall-e-3": ("1024x1024", "1792x1024", "1024x1792"),
    "gpt-image": ("1024x1024", "1536x1024", "1024x1536"),
}
# Body fields that fix the picture's shape: when present, no ratio from the prompt or LLM applies.
SIZE_FIELDS = ("width", "height", "aspect_ratio", "aspectRatio")
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(slots=True)
class PromptPlan:
    original: str  # the caller's text without `no-enhance` and the ratio phrase
    prompt: str  # what the provider is sent
    ratio: str | None  # the ratio handed to the provider (None: explicit size or provider default)
    ratio_source: str  # "size" (explicit), "prompt", "llm" or "default"
    enhancement: str  # "enhanced", "failed", "skipped" (no-enhance) or "off" (not asked, or no key)
    reason: str | None = None  # why enhancement failed

    def annotate(self, result: ProviderResult) -> None:
        """OpenAI's way of telling the caller the prompt was rewritten: `revised_prompt`."""
        if self.enhancement == "enhanced":
            for img in result.images:
                img.revised_prompt = img.revised_prompt or self.prompt


def flag(value: Any) -> bool | None:
    """`enhance` as JSON (true/false) or as a form field ("true", "0", ...); None when absent or unclear."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def enhance_wanted(asked: Any, options: Mapping[str, Any], default: bool) -> bool:
    """The request's `enhance` › the route's `enhance` option › the surface's default."""
    for value in (asked, options.get("enhance")):
        on = flag(value)
        if on is not None:
            return on
    return default


def explicit_size(req: ImageRequest) -> bool:
    return (req.size not in (None, "", "auto")) or any(req.extra.get(k) not in (None, "") for k in SIZE_FIELDS)


def will_enhance(prompt: str, settings: EnhanceSettings, enabled: bool) -> bool:
    """Whether prepare() is going to call the LLM (a chat stream says so before the wait)."""
    return enabled and settings.enabled and strip_no_enhance(prompt)[0]


def _log_aspect(size: str) -> float:
    w, _, h = size.partition("x")
    return math.log(int(w) / int(h))


def size_for_ratio(ratio: str, provider_name: str, upstream_model: str) -> str:
    """A `size` for providers that take pixels: OpenAI's nearest supported size, else 1024 on the long side."""
    if provider_name == "openai":
        allowed = next((v for k, v in OPENAI_SIZES.items() if upstream_model.startswith(k)), OPENAI_SIZES["gpt-image"])
        w, _, h = ratio.partition(":")
        target = math.log(int(w) / int(h))
        return min(allowed, key=lambda s: abs(_log_aspect(s) - target))
    w_px, h_px = ratio_to_size(ratio, 1024)
    return f"{w_px}x{h_px}"


def apply_ratio(req: ImageRequest, provider: Provider, upstream_model: str, ratio: str) -> None:
    if getattr(provider, "takes_aspect_ratio", False):
        req.extra["aspect_ratio"] = ratio
    else:
        req.size = size_for_ratio(ratio, type(provider).name, upstream_model)


async def prepare(req: ImageRequest, provider: Provider, upstream_model: str, settings: EnhanceSettings,
                  session: Callable[[], aiohttp.ClientSession], *, enhance_on: bool) -> PromptPlan:
    """Rewrite `req` in place (prompt, ratio) and say what was done. Never fails for LLM trouble."""
    req.extra.pop("enhance", None)
    wanted, text = strip_no_enhance(req.prompt)
    found = parse_ratio(text)
    original = found.prompt.strip()
    if not original:
        raise InvalidRequest("The prompt is empty once the ratio and 'no-enhance' are taken out.", param="prompt",
                             code="missing_required_parameter")
    explicit = explicit_size(req)
    prompt, llm_ratio, reason = original, None, None
    if enhance_on and not wanted:
        state = "skipped"
    elif enhance_on and settings.enabled:
        # A ratio the caller fixed (in words, or by an explicit size) is not the LLM's to choose.
        fixed = found.ratio or (req.size or "custom" if explicit else None)
        res = await enhance(session(), settings, original, fixed)
        if res.ok:
            state, prompt, llm_ratio = "enhanced", parse_ratio(res.prompt).prompt or res.prompt, res.aspect_ratio
        else:
            state, reason = "failed", redact(res.reason or "", [settings.api_key]) or None
    else:
        state = "off"
    if explicit:
        ratio, source = None, "size"
    elif found.ratio:
        ratio, source = found.ratio, "prompt"
    elif llm_ratio:
        ratio, source = llm_ratio, "llm"
    else:
        ratio, source = None, "default"
    req.prompt = prompt
    if ratio:
        apply_ratio(req, provider, upstream_model, ratio)
    return PromptPlan(original, prompt, ratio, source, state, reason)


async def for_route(rt: Runtime, route: Route, req: ImageRequest, *, enhance_default: bool,
                    parse_default: bool) -> PromptPlan | None:
    """Run the pipeline for a route when enhancement (request `enhance` › route option `enhance` ›
    default) or ratio parsing (route option `parse_ratio` › default) is on; else None, prompt untouched."""
    options: Mapping[str, Any] = route.options
    if not (options or enhance_default or parse_default or "enhance" in req.extra):
        return None  # nothing asks for it (the common case, decided without the steps below)
    enhance_on = enhance_wanted(req.extra.pop("enhance", None), options, enhance_default)
    parse_on = flag(options.get("parse_ratio"))
    if not enhance_on and not (parse_on if parse_on is not None else parse_default):
        return None
    provider = rt.router.provider_of(route)
    return await prepare(req, provider, route.upstream_model, rt.cfg.enhance, rt.enhance_session,
                         enhance_on=enhance_on)
