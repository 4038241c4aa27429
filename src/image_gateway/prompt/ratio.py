"""Aspect ratios written into a prompt ("一只猫，比例 16:9", "a cat --ar 21:9") and the ``no-enhance`` flag.

Unlike the seed project (z-image-api), a ratio is only recognised after a trigger word, so
"下午16:30的洛杉矶" or "time 13:45" are left alone. Removing the ratio (or ``no-enhance``) never
glues two words together and does not leave a dangling separator behind.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "RATIOS",
    "RatioMatch",
    "nearest_ratio",
    "parse_ratio",
    "ratio_to_size",
    "strip_no_enhance",
]

RATIOS: tuple[str, ...] = ("1:1", "1:2", "2:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")

class RatioMatch(NamedTuple):
    """``ratio`` is one of RATIOS or None; ``prompt`` is the text with the ratio phrase removed."""

    ratio: str | None
    prompt: str


# --- removal machinery shared by the ratio phrase and no-enhance -----------------------------------
#
# A phrase is: lead (`\s* separator? \s*`), an optional opening bracket, the trigger, what follows
# the trigger, the closing bracket (when one was opened) and a trail (`\s* punctuation? \s*`).
# As one regex starting with `\s*` this took cubic time on a run of whitespace (each start in the
# run rescanned it, backtracking between adjacent `\s*`s): 600 spaces stalled the process for 15 s.
# So the trigger, which starts with one of a few non-space characters, is looked for (those
# characters first: a C-speed scan); what follows it is matched in place with possessive
# quantifiers (no backtracking); the lead is walked back by hand.
# Every character is looked at a bounded number of times: linear in the length of the text.

_SEPARATORS = "，,、;；"  # clause separators that dangle once the phrase after them is gone
_TRAIL_PUNCT = _SEPARATORS + "。.!！?？"
_TERMINAL = ".。!！?？"
_OPENERS = "(（[【"
_CLOSE_RE = re.compile(r"\s*+[)）\]】]")
_TRAIL_RE = re.compile(rf"\s*+(?:(?P<tp>[{re.escape(_TRAIL_PUNCT)}])\s*+)?")

# Every character a trigger can start with (IGNORECASE folds a, r and n only to A, R and N).
_RATIO_FIRST = re.compile("[画图宽长纵横比aArR-]")
_RATIO_TRIGGER = re.compile(
    # Chinese: optional "画面/图片/…" before 比例, optional 为/是 after it.
    r"(?:画面|图片|图像|宽高|长宽|纵横|横纵)?比例(?:为|是)?"
    r"|(?<![A-Za-z0-9_-])(?:aspect[\s_-]*+ratio|aspect|ratio|--ar|--aspect)(?![A-Za-z])",
    re.IGNORECASE,
)
# After the trigger: "16:9", ": 16:9", "=16：9", "为16:9的"... (`(?!\d)` after W: at most 3 digits).
_RATIO_VALUE = re.compile(r"\s*+[:：=]?+\s*+(?P<w>\d{1,3})(?!\d)\s*+[:：]\s*+(?P<h>\d{1,3})(?!\d|[:：.]\d)(?:的)?+")
_NO_ENHANCE_FIRST = re.compile("[nN-]")
_NO_ENHANCE_TRIGGER = re.compile(r"(?<![A-Za-z0-9])-{0,2}no-enhance(?![A-Za-z0-9])", re.IGNORECASE)
_EMPTY = re.compile("")

_WS_RE = re.compile(r"\s+")


class _Phrase(NamedTuple):
    start: int
    end: int
    lp: str | None  # the separator before the phrase, if any
    tp: str | None  # the punctuation after it, if any
    value: re.Match[str]  # what followed the trigger


def _lead(text: str, at: int, floor: int) -> tuple[int, str | None, int]:
    r"""Walk back from the trigger at `at` over `\s* sep? \s* (open \s*)?`, not past `floor`:
    (start, separator, index of the opening bracket or -1)."""
    i = at
    while i > floor and text[i - 1].isspace():
        i -= 1
    opened = -1
    if i > floor and text[i - 1] in _OPENERS:
        i = opened = i - 1
        while i > floor and text[i - 1].isspace():
            i -= 1
    lp = None
    if i > floor and text[i - 1] in _SEPARATORS:
        i -= 1
        lp = text[i]
        while i > floor and text[i - 1].isspace():
            i -= 1
    return i, lp, opened


def _phrases(text: str, first: re.Pattern[str], trigger: re.Pattern[str],
             value: re.Pattern[str]) -> Iterator[_Phrase]:
    """Every phrase, left to right, never overlapping: what `re.finditer` gave for the one-regex form
    (`floor` is where the last phrase ended: the next one's lead does not reach back over it)."""
    floor = search = 0
    while (f := first.search(text, search)) is not None:
        search = f.start() + 1
        t = trigger.match(text, f.start())
        v = value.match(text, t.end()) if t is not None else None
        if t is None or v is None:
            continue
        start, lp, opened = _lead(text, t.start(), floor)
        end = v.end()
        if opened >= 0:
            close = _CLOSE_RE.match(text, end)
            if close is None:  # an opening bracket without its closing one stays in the text
                start, lp = opened + 1, None
            else:
                end = close.end()
        trail = _TRAIL_RE.match(text, end)
        assert trail is not None  # it matches the empty string
        yield _Phrase(start, trail.end(), lp, trail.group("tp"), v)
        floor = search = trail.end()


def _is_wide(ch: str) -> bool:
    """CJK characters and full-width punctuation need no space next to them."""
    return unicodedata.east_asian_width(ch) in ("W", "F")


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch).startswith("P")


def _join(prev: str, nxt: str) -> str:
    """What to put between the text before and after a removed phrase."""
    if not prev or not nxt or prev.isspace() or nxt.isspace():
        return ""
    if _is_wide(prev) or _is_wide(nxt):
        return ""
    if _is_punct(nxt) and unicodedata.category(nxt) in ("Pe", "Pf", "Po"):
        return ""  # closing bracket/quote or comma-like: attach to the word before
    return " "


def _replacement(text: str, p: _Phrase) -> str:
    """Replacement for one removed phrase, looking at its neighbours in the original text."""
    prev = text[p.start - 1] if p.start > 0 else ""
    nxt = text[p.end] if p.end < len(text) else ""
    if not prev or _is_punct(prev):
        # Start of text or right after punctuation: any separator around the phrase is dangling.
        return _join(prev, nxt)
    if not nxt:
        # End of text: keep a sentence end ("a cat, ratio 16:9." -> "a cat."), drop separators.
        return p.tp if p.tp is not None and p.tp in _TERMINAL else ""
    keep = p.tp if p.tp is not None else p.lp
    if keep is not None:
        return keep if _is_wide(keep) else keep + " "
    return _join(prev, nxt)


def _remove(text: str, phrases: list[_Phrase]) -> str:
    out: list[str] = []
    last = 0
    for p in phrases:
        out += (text[last : p.start], _replacement(text, p))
        last = p.end
    out.append(text[last:])
    return _WS_RE.sub(" ", "".join(out)).strip()


def _canonical(w: str, h: str) -> str:
    return f"{int(w)}:{int(h)}"


def parse_ratio(text: str) -> RatioMatch:
    """Find a ratio introduced by a trigger word (比例, ratio, aspect ratio, aspect, --ar, --aspect).

    Only the ten RATIOS are recognised; the first one wins and every recognised phrase is removed.
    Unknown ratios ("ratio 5:7") and bare ratios without a trigger are left in the text. When
    nothing is recognised the text is returned unchanged.
    """
    found: list[str] = []
    removed: list[_Phrase] = []
    for p in _phrases(text, _RATIO_FIRST, _RATIO_TRIGGER, _RATIO_VALUE):
        ratio = _canonical(p.value.group("w"), p.value.group("h"))
        if ratio in RATIOS:
            found.append(ratio)
            removed.append(p)
    if not found:
        return RatioMatch(None, text)
    return RatioMatch(found[0], _remove(text, removed))


def strip_no_enhance(text: str) -> tuple[bool, str]:
    """Return (enhance_wanted, cleaned). ``no-enhance`` (any case, also ``--no-enhance``) is removed
    without gluing the words around it: "a cat no-enhance reading" -> (False, "a cat reading")."""
    removed = list(_phrases(text, _NO_ENHANCE_FIRST, _NO_ENHANCE_TRIGGER, _EMPTY))
    if not removed:
        return True, text
    return False, _remove(text, removed)


# --- sizes -------------------------------------------------------------------------------------------


def _split_ratio(ratio: str) -> tuple[int, int]:
    parts = ratio.replace("：", ":").split(":")
    if len(parts) != 2:
        raise ValueError(f"not a ratio: {ratio!r}")
    try:
        w, h = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"not a ratio: {ratio!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"not a ratio: {ratio!r}")
    return w, h


def ratio_to_size(ratio: str, long_side: int, multiple: int = 8) -> tuple[int, int]:
    """(width, height) for ``ratio`` ("W:H") with the long side fixed at ``long_side`` and the short
    side rounded to the nearest ``multiple`` (at least ``multiple``)."""
    if long_side <= 0 or multiple <= 0:
        raise ValueError("long_side and multiple must be positive")
    w, h = _split_ratio(ratio)
    short = max(multiple, round(long_side * min(w, h) / max(w, h) / multiple) * multiple)
    short = min(short, long_side)
    return (long_side, short) if w >= h else (short, long_side)


def nearest_ratio(width: int, height: int) -> str:
    """The entry of RATIOS closest to width:height, compared on the log of the aspect."""
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    target = math.log(width / height)

    def distance(r: str) -> float:
        w, h = _split_ratio(r)
        return abs(math.log(w / h) - target)

    return min(RATIOS, key=distance)
