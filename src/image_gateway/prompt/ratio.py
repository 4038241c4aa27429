"""Aspect ratios written into a prompt ("一只猫，比例 16:9", "a cat --ar 21:9") and the ``no-enhance`` flag.

Unlike the seed project (z-image-api), a ratio is only recognised after a trigger word, so
"下午16:30的洛杉矶" or "time 13:45" are left alone. Removing the ratio (or ``no-enhance``) never
glues two words together and does not leave a dangling separator behind.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import NamedTuple

__all__ = [
    "RATIOS",
    "ZIMAGE_SIZES",
    "RatioMatch",
    "nearest_ratio",
    "parse_ratio",
    "ratio_to_size",
    "strip_no_enhance",
]

RATIOS: tuple[str, ...] = ("1:1", "1:2", "2:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")

# Sizes for Z-Image on sd.exacg.cc. The six ratios of the seed's table are copied from it; the other
# four keep the long side at 2048 where possible (2:3 mirrors the seed's 3:2).
ZIMAGE_SIZES: dict[str, tuple[int, int]] = {
    "1:1": (2048, 2048),
    "1:2": (1024, 2048),
    "2:1": (2048, 1024),
    "2:3": (1280, 1920),
    "3:2": (1920, 1280),
    "3:4": (1536, 2048),
    "4:3": (2048, 1536),
    "9:16": (1152, 2048),
    "16:9": (2048, 1152),
    "21:9": (2048, 880),
}


class RatioMatch(NamedTuple):
    """``ratio`` is one of RATIOS or None; ``prompt`` is the text with the ratio phrase removed."""

    ratio: str | None
    prompt: str


# --- removal machinery shared by the ratio phrase and no-enhance -----------------------------------

_SEPARATORS = "，,、;；"  # clause separators that dangle once the phrase after them is gone
_TRAIL_PUNCT = _SEPARATORS + "。.!！?？"
_TERMINAL = ".。!！?？"
_LEAD = rf"(?P<lead>\s*(?P<lp>[{_SEPARATORS}])?\s*)"
_OPEN = r"(?P<open>[(（\[【]\s*)?"
_CLOSE = r"(?(open)\s*[)）\]】])"
_TRAIL = rf"(?P<trail>\s*(?:(?P<tp>[{re.escape(_TRAIL_PUNCT)}])\s*)?)"

_RATIO_RE = re.compile(
    _LEAD
    + _OPEN
    + r"(?:"
    # Chinese: optional "画面/图片/…" before 比例, optional 为/是 after it.
    + r"(?:画面|图片|图像|宽高|长宽|纵横|横纵)?比例(?:为|是)?"
    + r"|(?<![A-Za-z0-9_-])(?:aspect[\s_-]*ratio|aspect|ratio|--ar|--aspect)(?![A-Za-z])"
    + r")"
    + r"\s*[:：=]?\s*"
    + r"(?P<w>\d{1,3})\s*[:：]\s*(?P<h>\d{1,3})(?!\d|[:：.]\d)(?:的)?"
    + _CLOSE
    + _TRAIL,
    re.IGNORECASE,
)

_NO_ENHANCE_RE = re.compile(
    _LEAD + _OPEN + r"(?<![A-Za-z0-9])-{0,2}no-enhance(?![A-Za-z0-9])" + _CLOSE + _TRAIL,
    re.IGNORECASE,
)

_WS_RE = re.compile(r"\s+")


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


def _replacement(m: re.Match[str]) -> str:
    """Replacement for one removed phrase, looking at its neighbours in the original text."""
    text = m.string
    prev = text[m.start() - 1] if m.start() > 0 else ""
    nxt = text[m.end()] if m.end() < len(text) else ""
    lp = m.group("lp")
    tp = m.group("tp")
    if not prev or _is_punct(prev):
        # Start of text or right after punctuation: any separator around the phrase is dangling.
        return _join(prev, nxt)
    if not nxt:
        # End of text: keep a sentence end ("a cat, ratio 16:9." -> "a cat."), drop separators.
        return tp if tp is not None and tp in _TERMINAL else ""
    keep = tp if tp is not None else lp
    if keep is not None:
        return keep if _is_wide(keep) else keep + " "
    return _join(prev, nxt)


def _tidy(text: str) -> str:
    return _WS_RE.sub(" ", text).strip()


def _canonical(w: str, h: str) -> str:
    return f"{int(w)}:{int(h)}"


def parse_ratio(text: str) -> RatioMatch:
    """Find a ratio introduced by a trigger word (比例, ratio, aspect ratio, aspect, --ar, --aspect).

    Only the ten RATIOS are recognised; the first one wins and every recognised phrase is removed.
    Unknown ratios ("ratio 5:7") and bare ratios without a trigger are left in the text. When
    nothing is recognised the text is returned unchanged.
    """
    found: list[str] = []

    def repl(m: re.Match[str]) -> str:
        ratio = _canonical(m.group("w"), m.group("h"))
        if ratio not in RATIOS:
            return m.group(0)
        found.append(ratio)
        return _replacement(m)

    cleaned = _RATIO_RE.sub(repl, text)
    if not found:
        return RatioMatch(None, text)
    return RatioMatch(found[0], _tidy(cleaned))


def strip_no_enhance(text: str) -> tuple[bool, str]:
    """Return (enhance_wanted, cleaned). ``no-enhance`` (any case, also ``--no-enhance``) is removed
    without gluing the words around it: "a cat no-enhance reading" -> (False, "a cat reading")."""
    cleaned, n = _NO_ENHANCE_RE.subn(_replacement, text)
    if n == 0:
        return True, text
    return False, _tidy(cleaned)


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
