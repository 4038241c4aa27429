"""Reading the JSON object an LLM was asked for, out of whatever it actually answered.

Survives code fences, `<think>` blocks, chatter around the object, `//` and `/* */` comments and
trailing commas, and URLs inside strings (the seed's `//` stripping broke those).

The reply can echo the caller's text, so everything here is linear in its length: no regex that
backtracks over a run, no rescan from every `{` or `<think>`, and a bounded amount of decoding
however many objects are nested (a reply of 50,000 `{` took minutes with the per-`{` scan).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from .ratio import RATIOS

# After an opening fence: the info string (`json`, `jsonc`, `js`...) and the line end.
_FENCE_INFO = re.compile(r"[ \t]*+(?:json[c5]?|javascript|js)?+[ \t]*+\r?\n?", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(think|thinking|reasoning)>", re.IGNORECASE)
_TRAILING_COMMA_RE = re.compile(r",(\s*+[}\]])")
# Lenient retry: a string (kept whole; an unterminated one runs to the end), or a comment (dropped).
_LENIENT_TOKEN = re.compile(r'("(?:[^"\\]|\\.)*+(?:"|\\?\Z))|//[^\n]*+|/\*(?:.*?\*/|.*)', re.DOTALL)
_SIGNIFICANT = re.compile(r'\{+|\}+|["\\]')  # what the brace matcher looks at (runs of braces at once)
# Characters handed to the decoders, as a multiple of the reply's length: a plain or fenced object
# costs 2-8x (strict and lenient, fenced and whole); only pathological nesting gets near this, and is then given up on.
_DECODE_BUDGET = 8
_DECODE_BUDGET_MIN = 1 << 16


def _strip_think(text: str) -> str:
    """Replace each `<think>…</think>` (also thinking/reasoning, any case) with a space. An opening
    tag without its closing one stays; once one is known to have none, later ones are not searched."""
    out: list[str] = []
    last = pos = 0
    unclosed: set[str] = set()
    while (m := _THINK_OPEN.search(text, pos)) is not None:
        tag = m.group(1)
        close = None
        if tag.lower() not in unclosed:  # (re caches the compiled closing pattern)
            close = re.compile(f"</{tag}>", re.IGNORECASE).search(text, m.end())
        if close is None:
            unclosed.add(tag.lower())
            pos = m.start() + 1
            continue
        out += (text[last : m.start()], " ")
        last = pos = close.end()
    out.append(text[last:])
    return "".join(out)


def _fenced(text: str) -> Iterator[str]:
    """The body of every closed ``` fence, in order."""
    pos = 0
    while (start := text.find("```", pos)) != -1:
        info = _FENCE_INFO.match(text, start + 3)
        body = info.end() if info is not None else start + 3
        close = text.find("```", body)
        if close == -1:
            return
        yield text[body:close]
        pos = close + 3


def _balanced_objects(text: str) -> list[tuple[int, int]]:
    """(start, end) of every balanced ``{...}`` span, in order of start; braces inside JSON strings
    (with escapes) do not count. One pass with a stack: a `{` inside a string of an enclosing
    object starts no span of its own (the per-`{` rescan this replaces tried those too)."""
    spans: list[tuple[int, int]] = []
    stack: list[int] = []  # starts of the open objects
    in_str = False
    skip = -1  # the character after a backslash inside a string
    for m in _SIGNIFICANT.finditer(text):
        i = m.start()
        if i < skip:
            continue
        c = text[i]
        if not stack:
            if c == "{":
                stack.extend(range(i, m.end()))
        elif in_str:
            if c == "\\":
                skip = i + 2
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "{":
            stack.extend(range(i, m.end()))
        elif c == "}":  # each closes the innermost open object; once none is open, the rest do nothing
            k = min(len(stack), m.end() - i)
            spans.extend(zip(reversed(stack[-k:]), range(i + 1, i + k + 1), strict=True))
            del stack[-k:]
    spans.sort()
    return spans


def _strip_comments(text: str) -> str:
    """Remove // and /* */ comments outside JSON strings, and trailing commas (lenient retry only)."""
    stripped = _LENIENT_TOKEN.sub(lambda m: m.group(1) or "", text)
    return _TRAILING_COMMA_RE.sub(r"\1", stripped)


def _load(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the decoder goes
        pass
    try:
        return json.loads(_strip_comments(candidate))
    except (ValueError, RecursionError):
        return None


def _normalise_ratio(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    r = "".join(value.replace("：", ":").split())
    if ":" in r:
        w, _, h = r.partition(":")
        # isascii: "²".isdigit() is true but int("²") raises; a ratio side has at most 3 digits.
        if w.isascii() and h.isascii() and w.isdigit() and h.isdigit() and len(w) <= 3 and len(h) <= 3:
            r = f"{int(w)}:{int(h)}"
    return r if r in RATIOS else None


def parse_llm_json(content: str) -> tuple[str, str | None]:
    """(prompt, aspect_ratio) from an LLM reply. Tolerates code fences, <think> blocks, chatter around
    the JSON, braces/URLs/``//`` inside strings and (as a retry) comments and trailing commas outside
    them. ``aspect_ratio`` is None unless it is one of RATIOS. Raises ValueError with a short reason."""
    text = _strip_think(content).strip()
    if not text:
        raise ValueError("empty reply from LLM")
    budget = _DECODE_BUDGET * len(text) + _DECODE_BUDGET_MIN
    saw_object = False
    for source in (*_fenced(text), text):
        for start, end in _balanced_objects(source):
            budget -= 2 * (end - start)  # the strict try, and the lenient one
            if budget < 0:
                raise ValueError("LLM reply nests too many objects to read")
            data = _load(source[start:end])
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
