"""Request shape of /v1/chat/completions as chat clients send it (docs/protocols.md §1.8), lenient on purpose.

Only what the image gateway uses is typed; every other field (temperature, tools, max_tokens...)
is ignored, as chat clients send plenty of them by default.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

from ..errors import InvalidRequest


class ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class ContentPart(msgspec.Struct):
    """`{"type": "text", "text": ...}`, `{"type": "image_url", "image_url": {"url": ...}}`, or anything else."""

    type: str = "text"
    text: str | None = None
    content: str | None = None  # non-standard text field some clients use (the seed reads it too)
    image_url: ImageURL | str | None = None


class Message(msgspec.Struct):
    role: str
    content: str | list[ContentPart | str] | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatRequest(msgspec.Struct):
    messages: list[Message]
    model: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: Annotated[int, Meta(ge=1, le=10)] | None = None  # number of images in the answer
    prompt: str | None = None  # non-standard, as the seed gateway: wins over the messages
    enhance: bool | str | None = None
    user: str | None = None


# Image parameters a chat body may carry at top level (beside messages), passed to the image request.
IMAGE_FIELDS = ("size", "quality", "style", "background", "output_format", "output_compression", "moderation",
                "width", "height", "seed", "cfg", "steps", "negative_prompt", "aspect_ratio", "image_size")


def parse_chat(raw: dict[str, Any]) -> ChatRequest:
    try:
        return msgspec.convert(raw, ChatRequest)
    except msgspec.ValidationError as e:
        text = str(e)
        param = text.split("at `$.", 1)[1].split("`", 1)[0].split("[", 1)[0] if "at `$." in text else None
        raise InvalidRequest(f"Invalid chat request: {text}", param=param, code="invalid_value") from None


def last_user_message(req: ChatRequest) -> Message | None:
    for m in reversed(req.messages):
        if m.role == "user":
            return m
    return None


def split_content(msg: Message) -> tuple[str, list[str]]:
    """(prompt text, image URLs) of a user message. Text parts are joined by one space."""
    if msg.content is None:
        return "", []
    if isinstance(msg.content, str):
        return msg.content.strip(), []
    texts: list[str] = []
    urls: list[str] = []
    for part in msg.content:
        if isinstance(part, str):
            texts.append(part)
        elif part.type in ("image_url", "input_image") or part.image_url is not None:
            url = part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url
            if url:
                urls.append(url)
        else:
            text = part.text if part.text is not None else part.content
            if text:
                texts.append(text)
    return " ".join(t.strip() for t in texts if t.strip()), urls
