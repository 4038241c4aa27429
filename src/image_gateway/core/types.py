"""The gateway's shared vocabulary: one image request, its result, its progress, a handle to poll,
and what one upstream call needs. Every layer may import this module; it imports nothing of the
gateway's but errors (and, for a type only, media/egress.py's policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import GatewayError

if TYPE_CHECKING:
    from ..media.egress import EgressPolicy

Operation = Literal["generate", "edit", "variation"]


@dataclass(slots=True)
class InputImage:
    """A reference image as the caller sent it: bytes from multipart, or a URL / data URL."""

    data: bytes | None = None
    url: str | None = None
    filename: str = "image.png"
    content_type: str = "image/png"


@dataclass(slots=True)
class ImageRequest:
    """One validated Images API call, independent of how it arrived (JSON, multipart, chat)."""

    operation: Operation
    prompt: str
    model: str
    n: int = 1
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    response_format: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    background: str | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    partial_images: int | None = None
    stream: bool = False
    user: str | None = None
    images: list[InputImage] = field(default_factory=list)
    mask: InputImage | None = None
    # Provider-specific fields (width, height, seed, steps, cfg, negative_prompt, ...) and
    # unknown fields passed through to upstreams that accept them.
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class GeneratedImage:
    b64: str | None = None  # base64 text, as on the wire
    url: str | None = None
    revised_prompt: str | None = None
    content_type: str | None = None


@dataclass(slots=True)
class ProviderResult:
    images: list[GeneratedImage]
    usage: dict[str, Any] | None = None
    # Echoed response fields (background, output_format, quality, size) when the upstream gave them.
    meta: dict[str, Any] = field(default_factory=dict)
    # Set by the engine, never by an adapter: the ImagesResponse body already delivered for a task
    # (an async job renders its result once, when it ends, so it can be stored and fetched later).
    rendered: dict[str, Any] | None = None
    # True when the images already went out as relayed StreamEvents (a native stream).
    streamed: bool = False


@dataclass(slots=True)
class Progress:
    """Progress of a running job; `preview` is a partial image when the upstream offers one."""

    percent: int
    preview: GeneratedImage | None = None
    status: str = "in_progress"


@dataclass(slots=True)
class StreamEvent:
    """An event already in OpenAI's image-stream shape (relayed as-is), e.g. from OpenAI itself."""

    data: dict[str, Any]


@dataclass(slots=True)
class Pending:
    """An accepted upstream task that the engine polls. `handle` is JSON-safe and holds no key."""

    handle: dict[str, Any]


@dataclass(slots=True)
class Submitting:
    """Yielded by an adapter whose class sets `signals_submit = True`, right before it sends the job
    upstream (after any wait of its own, e.g. for an account slot). The engine consumes it: an async
    task is recorded as "being submitted" first, so a restart before this point submits it then and
    a restart after it does not send it twice. Adapters without the flag are treated as sending at
    once when `run()` starts."""


ProviderEvent = Progress | StreamEvent | ProviderResult | Pending | Submitting
# What `poll` returns per handle (see Provider.poll): an event, or the error that ended that handle.
PollOutcome = Progress | Pending | ProviderResult | StreamEvent | GatewayError


@dataclass(slots=True)  # (not frozen: one is made per attempt, and a frozen __init__ costs ~3x)
class CallContext:
    """What one upstream call needs besides the request. The key lives only here, in memory.
    Treat as read-only."""

    upstream_model: str
    api_key: str | None = field(repr=False)
    options: Mapping[str, Any]
    request_id: str = ""
    deadline: float = 0.0  # loop.time() by which the whole job must be done
    # The policy caller-supplied URLs were admitted under (the config's PRIVATE_URL_ALLOWLIST), for an
    # adapter that fetches such a URL itself; None: the strict default.
    egress: EgressPolicy | None = None
