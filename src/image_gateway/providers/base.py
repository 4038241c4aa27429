"""The contract between the engine and a provider adapter.

An adapter translates an ImageRequest into its upstream's protocol and the upstream's answer
back into a ProviderResult, progress events or a handle to poll. It never sees HTTP objects of
the gateway's own surface, and never stores a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from ..errors import GatewayError

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


@dataclass(frozen=True, slots=True)
class Capabilities:
    edits: bool = False
    variations: bool = False
    native_stream: bool = False  # emits OpenAI-shaped stream events itself
    max_n: int = 10
    needs_key: bool = True


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A built-in route a provider ships (config may add to or override these)."""

    name: str
    upstream_model: str
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(slots=True)  # (not frozen: one is made per attempt, and a frozen __init__ costs ~3x)
class CallContext:
    """What one upstream call needs besides the request. The key lives only here, in memory.
    Treat as read-only."""

    upstream_model: str
    api_key: str | None = field(repr=False)
    options: Mapping[str, Any]
    request_id: str = ""
    deadline: float = 0.0  # loop.time() by which the whole job must be done


class Provider(Protocol):
    name: ClassVar[str]
    env_prefix: ClassVar[str]  # <PREFIX>_API_KEY / <PREFIX>_BASE_URL
    default_base_url: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    builtin_routes: ClassVar[Sequence[RouteSpec]]

    def run(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        """Start the job. Yield progress/stream events, then a ProviderResult, or a Pending handle.

        After a Pending the engine stops iterating: the job now belongs to the engine's poller.
        """
        ...

    # Optional: `async def complete(self, req, ctx) -> ProviderResult` for a synchronous upstream.
    # When present, the engine calls it for requests that are not streamed instead of iterating
    # `run()` (one awaited call instead of an event generator: the hot path).

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> Sequence[PollOutcome]:
        """Poll many pending handles at once (batched where the upstream allows).

        The contract (engine/poller.py relies on it):
        * Return one outcome per handle, in the same order:
          - Progress: still running; keep polling (dedup of unchanged progress is the engine's job);
          - Pending(new_handle): still running, and from now on poll `new_handle` instead (a second
            phase, e.g. upscales submitted after a grid finished);
          - ProviderResult: done;
          - a GatewayError *instance* (returned, not raised): that handle failed; the others go on.
        * Raising means the whole call failed. A transient error (GatewayError.retryable, status >= 500,
          408/429, a timeout or connection error) is retried at the next interval with back-off, until
          the job's deadline; any other error makes the engine poll each handle of the batch alone to
          find the ones it belongs to.
        * `ctx` carries the key and the options of the handles' route; every handle of one call shares
          them. Anything else a handle needs must be inside it: handles are stored as JSON and
          outlive the process (restart resume). Never put a key in a handle.
        """
        ...

    async def close(self) -> None: ...


class Cancellable(Protocol):
    """Optional: adapters whose upstream can cancel a task. Called on DELETE /v1/images/tasks/{id} and
    when a job passes its deadline. Best effort: it must not raise for a task that already ended."""

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None: ...
