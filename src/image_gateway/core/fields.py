"""Provider-specific request fields (`seed`, `steps`, `cfg`, `width`...) as numbers, with the caller's
mistake as a 400 naming the field. JSON gives numbers, multipart gives strings; both are accepted."""

from __future__ import annotations

import math
from typing import Any

from ..errors import InvalidRequest


def int_field(raw: Any, name: str, *, max_abs: int = 2**63 - 1) -> int | None:
    """None when absent; an int (or a string of ASCII digits, or an integral float) up to `max_abs`."""
    if raw is None or raw == "":
        return None
    value: int | None = None
    if isinstance(raw, bool):
        pass
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        digits = text.removeprefix("-")
        # isascii: "²".isdigit() is true but int("²") raises (and int() of thousands of digits raises too).
        if digits.isascii() and digits.isdigit() and len(digits) <= max(19, len(str(max_abs))):
            value = int(text)
    if value is None:
        raise InvalidRequest(f"'{name}' must be an integer.", param=name, code="invalid_value")
    if abs(value) > max_abs:
        raise InvalidRequest(f"'{name}' must be at most {max_abs}.", param=name, code="invalid_value")
    return value


def float_field(raw: Any, name: str) -> float | None:
    """None when absent; a finite number (or a string of one)."""
    if raw is None or raw == "":
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        raise InvalidRequest(f"'{name}' must be a number.", param=name, code="invalid_value") from None
    if not math.isfinite(value):
        raise InvalidRequest(f"'{name}' must be a finite number.", param=name, code="invalid_value")
    return value
