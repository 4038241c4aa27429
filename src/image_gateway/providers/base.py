"""The contract between the engine and a provider adapter (the vocabulary is in core/types.py).

An adapter translates an ImageRequest into its upstream's protocol and the upstream's answer
back into a ProviderResult, progress events or a handle to poll. It never sees HTTP objects of
the gateway's own surface, and never stores a key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..core.types import CallContext, ImageRequest, PollOutcome, ProviderEvent


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
