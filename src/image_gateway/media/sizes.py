"""Size strings (`WxH`, `auto`) to pixels."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×*]\s*(\d{1,5})\s*$")


def parse_size(size: str | None, default: tuple[int, int] = (1024, 1024), max_side: int = 4096,
               min_side: int = 16) -> tuple[int, int]:
    """`1024x1536` → (1024, 1536), clamped; `auto`/None → default. Invalid → ValueError."""
    if size is None or size == "auto":
        return default
    m = _SIZE.match(size)
    if not m:
        raise ValueError(f"size must be WIDTHxHEIGHT or 'auto', got {size!r}")
    w, h = int(m.group(1)), int(m.group(2))
    return max(min_side, min(w, max_side)), max(min_side, min(h, max_side))
