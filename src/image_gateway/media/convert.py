"""Encoding and re-encoding images (png/jpeg/webp, compression)."""

from __future__ import annotations

import base64
import io

from PIL import Image

FORMATS = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp",
                 "gif": "image/gif"}


def encode_image(img: Image.Image, fmt: str = "png", compression: int | None = None) -> str:
    """Encode to base64 text. `compression` follows OpenAI: 0-100, 100 = best quality (jpeg/webp)."""
    buf = io.BytesIO()
    pil_fmt = FORMATS.get(fmt, "PNG")
    if pil_fmt == "JPEG" and img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    if pil_fmt == "PNG":
        img.save(buf, "PNG", compress_level=1)
    else:
        quality = 95 if compression is None else max(1, min(100, compression))
        img.save(buf, pil_fmt, quality=quality)
    return base64.b64encode(buf.getvalue()).decode()


def sniff_format(data: bytes) -> str | None:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


def convert_bytes(data: bytes, fmt: str, compression: int | None) -> bytes:
    """Re-encode only when needed: same format and no compression asked → the bytes as they are."""
    current = sniff_format(data)
    if current == fmt and (compression is None or fmt == "png"):
        return data
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return base64.b64decode(encode_image(img, fmt, compression))
