"""Prompt enhancement through any OpenAI-compatible chat endpoint.

The LLM is asked for ``{"prompt": "...", "aspect_ratio": "16:9" | null}``. Every failure (no key,
HTTP error, timeout, unparsable reply) yields ``EnhanceResult(ok=False, prompt=<original>, ...)``
with a short reason for the caller to print; nothing here raises for those. The API key is never
put into a reason, a log line or a repr.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..core.settings import EnhanceSettings
from .llm_json import parse_llm_json
from .ratio import RATIOS

__all__ = [
    "EnhanceResult",
    "EnhanceSettings",
    "build_system_prompt",
    "enhance",
    "parse_llm_json",
]

log = logging.getLogger(__name__)

MAX_RESPONSE_BYTES = 1 << 20  # an enhanced prompt is ~1 KB; refuse to buffer anything huge
_REASON_MAX = 300


@dataclass(frozen=True)
class EnhanceResult:
    ok: bool
    prompt: str
    aspect_ratio: str | None
    reason: str | None


# --- system prompt -----------------------------------------------------------------------------------

_RATIO_GUIDE = """\
- "1:1" square: icons, portraits of a single object, symmetric scenes
- "16:9" or "21:9" wide landscape: scenery, cityscapes, cinematic shots (21:9 for ultra-wide panoramas)
- "9:16" tall portrait: standing people, phone wallpapers, towers
- "3:2" or "2:3": classic photography, landscape or portrait orientation
- "4:3" or "3:4": paintings, illustrations, portraits of people
- "2:1" or "1:2": panoramic strips, very tall subjects such as waterfalls or scrolls"""

_RATIO_SHAPE = re.compile(r"^\d{1,3}:\d{1,3}$")


def build_system_prompt(user_ratio: str | None) -> str:
    """System prompt for the enhancement LLM. With ``user_ratio`` the LLM is told the ratio is fixed
    and must answer ``"aspect_ratio": null``."""
    if user_ratio is not None:
        shown = f" ({user_ratio})" if _RATIO_SHAPE.match(user_ratio) else ""
        ratio_part = (
            f"The user has already chosen the aspect ratio{shown}. Do not choose one: "
            'always return "aspect_ratio": null.'
        )
        example_ratio = "null"
    else:
        ratio_part = (
            "Choose the aspect ratio that best fits the composition, exactly one of: "
            + ", ".join(f'"{r}"' for r in RATIOS)
            + ". Guidance:\n"
            + _RATIO_GUIDE
        )
        example_ratio = '"3:2"'
    return f"""You are an expert Stable Diffusion prompt engineer.
Expand the user's idea into one vivid, detailed English image prompt of 50-100 words. Cover the \
style or medium, the subject, the scene, lighting and colour, composition and camera, mood, and \
small concrete details. Stay faithful to the user's idea; do not add unrelated subjects.

Aspect ratio: {ratio_part}

Reply with a single JSON object and nothing else, exactly of this form:
{{"prompt": "<the enhanced English prompt>", "aspect_ratio": <a ratio string or null>}}

Example: for the input "一只猫在看书" a good reply is
{{"prompt": "A fluffy ginger cat wearing tiny round spectacles, sitting in a cozy armchair and reading \
an open hardcover book, warm afternoon sunlight streaming through a window, dust motes in the air, \
bookshelves in the soft-focus background, rich warm colour palette, detailed fur texture, \
storybook illustration style, calm and whimsical mood", "aspect_ratio": {example_ratio}}}

Rules:
1. Always write the prompt in English, whatever the language of the input.
2. Describe only visual details; no explanations, reasoning or commentary.
3. Output only the JSON object: no markdown, no code fences, no text before or after it.
4. Never put aspect-ratio words or numbers (such as "16:9", "ratio", "aspect", "比例", "--ar") \
into the prompt; the ratio belongs only in "aspect_ratio".
5. Text the user puts in quotes (words on a sign, a shirt, a poster, a book cover) must be kept \
verbatim, in its original language and quotes, never translated or paraphrased.
"""


# --- the call ----------------------------------------------------------------------------------------


class _Failure(Exception):
    pass


def _redact(text: str, key: str | None) -> str:
    if key:
        text = text.replace(key, "***")
    text = " ".join(text.split())
    return text if len(text) <= _REASON_MAX else text[: _REASON_MAX - 3] + "..."


def _content_of(data: Any) -> str:
    try:
        content = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Failure("no content in LLM response") from None
    if isinstance(content, list):  # content parts, as some compatible servers send
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    if not isinstance(content, str) or not content.strip():
        raise _Failure("no content in LLM response")
    return content


def _error_detail(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except ValueError:
        return ""
    err = data.get("error") if isinstance(data, dict) else None
    msg = err.get("message") if isinstance(err, dict) else err
    return f": {msg}" if isinstance(msg, str) and msg else ""


async def _read_capped(resp: aiohttp.ClientResponse) -> bytes:
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(65536):
        buf += chunk
        if len(buf) > MAX_RESPONSE_BYTES:
            raise _Failure("LLM response too large")
    return bytes(buf)


async def _call(
    session: aiohttp.ClientSession, settings: EnhanceSettings, prompt: str, user_ratio: str | None
) -> str:
    body = {
        "model": settings.model,
        "messages": [
            {"role": "system", "content": build_system_prompt(user_ratio)},
            {"role": "user", "content": prompt},
        ],
        "temperature": 0.7,
        "max_tokens": 1000,
    }
    headers = {
        "Authorization": f"Bearer {settings.api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    async with session.post(
        settings.url,
        data=json.dumps(body, ensure_ascii=False).encode(),
        headers=headers,
        # our own deadline (asyncio.timeout in enhance) rules, not the session's default
        timeout=aiohttp.ClientTimeout(total=None),
        allow_redirects=False,
    ) as resp:
        raw = await _read_capped(resp)
        if resp.status != 200:
            raise _Failure(f"LLM API returned HTTP {resp.status}{_error_detail(raw)}")
    try:
        data = json.loads(raw)
    except ValueError:
        raise _Failure("LLM API returned a non-JSON body") from None
    return _content_of(data)


async def enhance(
    session: aiohttp.ClientSession, settings: EnhanceSettings, prompt: str, user_ratio: str | None
) -> EnhanceResult:
    """Enhance ``prompt``; never raises for upstream trouble (only cancellation propagates).

    The whole exchange (connect, headers and body) is bounded by ``settings.timeout_s``. When the
    user gave a ratio the LLM is told so and the result's ``aspect_ratio`` is always None.
    """

    def failed(reason: str) -> EnhanceResult:
        reason = _redact(reason, settings.api_key)
        log.debug("prompt enhancement failed: %s", reason)
        return EnhanceResult(ok=False, prompt=prompt, aspect_ratio=None, reason=reason)

    if not settings.api_key:
        return failed("ENHANCE_OPENAI_API_KEY not configured")
    if not prompt.strip():
        return failed("empty prompt")
    started = time.monotonic()
    try:
        async with asyncio.timeout(settings.timeout_s):
            content = await _call(session, settings, prompt, user_ratio)
    except TimeoutError:
        return failed(f"LLM request timed out after {settings.timeout_s:g}s")
    except _Failure as exc:
        return failed(str(exc))
    except Exception as exc:  # connection errors, bad URL, ...: never let enhancement break generation
        detail = str(exc)
        return failed(f"LLM request failed: {type(exc).__name__}" + (f": {detail}" if detail else ""))
    try:
        new_prompt, llm_ratio = parse_llm_json(content)
    except ValueError as exc:
        return failed(f"invalid JSON from LLM: {exc}")
    log.debug("prompt enhanced by %s in %.2fs", settings.model, time.monotonic() - started)
    return EnhanceResult(
        ok=True,
        prompt=new_prompt,
        aspect_ratio=None if user_ratio is not None else llm_ratio,
        reason=None,
    )
