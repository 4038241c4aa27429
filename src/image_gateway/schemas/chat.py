"""Request shape of /v1/chat/completions as chat clients send it (docs/protocols.md §1.8), lenient on purpose.

Only what the image gateway uses is typed; every other field (temperature, tools, max_tokens...)
is ignored, as chat clients send plenty of them by default.
"""

from __future__ import annotations

import re
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
    images: list[ContentPart] | None = None  # OpenRouter's assistant images, as some clients send them back


_RATIO = r"^\s*[1-9][0-9]{0,5}\s*[:：]\s*[1-9][0-9]{0,5}\s*$"


class ImageConfig(msgspec.Struct):
    """OpenRouter's `image_config`."""

    aspect_ratio: Annotated[str, Meta(pattern=_RATIO)] | None = None  # "16:9" (also "16：9")
    image_size: str | None = None


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
    modalities: list[str] | None = None  # OpenRouter's ["image", "text"]: accepted; the answer has both anyway
    image_config: ImageConfig | None = None


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


def _part_url(part: ContentPart) -> str | None:
    return part.image_url.url if isinstance(part.image_url, ImageURL) else part.image_url


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
            url = _part_url(part)
            if url:
                urls.append(url)
        else:
            text = part.text if part.text is not None else part.content
            if text:
                texts.append(text)
    return " ".join(t.strip() for t in texts if t.strip()), urls


MARKDOWN_IMAGE = re.compile(r"!\[(?:\\.|[^\]\\])*\]\(([^)\s]+)\)")


def message_images(msg: Message) -> list[str]:
    """The images a message carries: image parts, `images` (OpenRouter), and for an assistant message
    the Markdown images of its text (the gateway's own answers look like that)."""
    urls = [u for p in msg.images or () if (u := _part_url(p))]
    texts: list[str] = []
    if isinstance(msg.content, str):
        texts.append(msg.content)
    elif msg.content is not None:
        urls += split_content(msg)[1]
        texts += [p if isinstance(p, str) else p.text or "" for p in msg.content
                  if isinstance(p, str) or p.image_url is None]
    if msg.role == "assistant":
        urls += [u for t in texts for u in MARKDOWN_IMAGE.findall(t)]
    return list(dict.fromkeys(urls))


def earlier_images(req: ChatRequest) -> list[str]:
    """The images of the latest message before the last user message that has any: what a
    follow-up like "make it blue" refers to."""
    last = next((i for i in range(len(req.messages) - 1, -1, -1) if req.messages[i].role == "user"), None)
    for m in reversed(req.messages[:last]):
        if m.role in ("user", "assistant") and (found := message_images(m)):
            return found
    return []
