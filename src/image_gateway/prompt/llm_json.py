"""Reading the JSON object an LLM was asked for, out of whatever it actually answered.

Survives code fences, `<think>` blocks, chatter around the object, `//` and `/* */` comments and
trailing commas, and URLs inside strings (the seed's `//` stripping broke those).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .ratio import RATIOS

_FENCE_RE = re.compile(
    r"```[ \t]*(?:json[c5]?|javascript|js)?[ \t]*\r?\n?(.*?)```", re.DOTALL | re.IGNORECASE
)
_THINK_RE = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_TRAILING_COMMA_RE = re.compile(r",(\s*[}\]])")


def _balanced_objects(text: str) -> list[str]:
    """Every balanced ``{...}`` span, scanning from each ``{``; braces inside JSON strings
    (with escapes) do not count."""
    out: list[str] = []
    start = text.find("{")
    while start != -1:
        depth = 0
        in_str = False
        esc = False
        end = -1
        for i in range(start, len(text)):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    end = i
                    break
        if end == -1:
            start = text.find("{", start + 1)
            continue
        out.append(text[start : end + 1])
        start = text.find("{", start + 1)
    return out


def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside JSON strings, and trailing commas (lenient retry only)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
            continue
        if c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            nl = text.find("\n", i)
            i = n if nl == -1 else nl
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close == -1 else close + 2
        else:
            out.append(c)
            i += 1
    return _TRAILING_COMMA_RE.sub(r"\1", "".join(out))


def _load(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except ValueError:
        pass
    try:
        return json.loads(_strip_comments(candidate))
    except ValueError:
        return None


def _normalise_ratio(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    r = re.sub(r"\s+", "", value.replace("：", ":"))
    if ":" in r:
        w, _, h = r.partition(":")
        if w.isdigit() and h.isdigit():
            r = f"{int(w)}:{int(h)}"
    return r if r in RATIOS else None


def parse_llm_json(content: str) -> tuple[str, str | None]:
    """(prompt, aspect_ratio) from an LLM reply. Tolerates code fences, <think> blocks, chatter around
    the JSON, braces/URLs/``//`` inside strings and (as a retry) comments and trailing commas outside
    them. ``aspect_ratio`` is None unless it is one of RATIOS. Raises ValueError with a short reason."""
    text = _THINK_RE.sub(" ", content).strip()
    if not text:
        raise ValueError("empty reply from LLM")
    sources = [*(m.group(1) for m in _FENCE_RE.finditer(text)), text]
    saw_object = False
    for source in sources:
        for candidate in _balanced_objects(source):
            data = _load(candidate)
            if not isinstance(data, dict):
                continue
            saw_object = True
            prompt = data.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                continue
            ratio = data.get("aspect_ratio", data.get("aspectRatio", data.get("ratio")))
            return prompt.strip(), _normalise_ratio(ratio)
    if saw_object:
        raise ValueError('LLM JSON has no non-empty "prompt" string')
    raise ValueError("no JSON object in LLM reply")


