"""Request shapes of the Images API, as the OpenAI SDK sends them (docs/protocols.md §1.1-1.3)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from ..errors import InvalidRequest


class ImageParams(msgspec.Struct, omit_defaults=True):
    """Every documented parameter of generations / edits / variations, checked once."""

    prompt: str | None = None
    model: str | None = None
    n: Annotated[int, Meta(ge=1, le=10)] = 1
    size: Annotated[str, Meta(pattern=r"^(auto|\d{1,5}x\d{1,5})$")] | None = None
    quality: Literal["auto", "high", "medium", "low", "hd", "standard"] | None = None
    style: Literal["vivid", "natural"] | None = None
    response_format: Literal["url", "b64_json"] | None = None
    output_format: Literal["png", "jpeg", "webp"] | None = None
    output_compression: Annotated[int, Meta(ge=0, le=100)] | None = None
    background: Literal["transparent", "opaque", "auto"] | None = None
    moderation: Literal["low", "auto"] | None = None
    input_fidelity: Literal["high", "low"] | None = None
    partial_images: Annotated[int, Meta(ge=0, le=3)] | None = None
    stream: bool = False
    user: str | None = None


FIELDS = frozenset(ImageParams.__struct_fields__)
_AT = re.compile(r"at `\$\.([A-Za-z0-9_]+)")


def validate_params(raw: dict[str, Any], strict: bool = True) -> ImageParams:
    """Convert a decoded body (JSON, or form fields as strings when strict=False) or raise 400."""
    try:
        return msgspec.convert(raw, ImageParams, strict=strict)
    except msgspec.ValidationError as e:
        msg = str(e)
        m = _AT.search(msg)
        param = m.group(1) if m else None
        text = msg.split(" - at ")[0]
        raise InvalidRequest(f"Invalid value for '{param}': {text}" if param else f"Invalid request: {text}",
                             param=param, code="invalid_value") from None
