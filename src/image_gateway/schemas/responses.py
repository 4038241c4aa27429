"""Response bodies: ImagesResponse, models, errors, encoded with msgspec."""

from __future__ import annotations

import time
from typing import Any

import msgspec

_enc = msgspec.json.Encoder()
encode = _enc.encode


def images_response(data: list[dict[str, Any]], usage: dict[str, Any] | None, meta: dict[str, Any],
                    created: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"created": created or int(time.time()), "data": data}
    for k in ("background", "output_format", "quality", "size"):
        if k in meta:
            body[k] = meta[k]
    if usage:
        body["usage"] = usage
    return body


def model_object(name: str, owned_by: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owned_by}
