"""The contract between the engine and a provider adapter (the vocabulary is in core/types.py).

An adapter translates an ImageRequest into its upstream's protocol and the upstream's answer
back into a ProviderResult, progress events or a handle to poll. It never sees HTTP objects of
the gateway's own surface, and never stores a key. It subclasses one or more of the mode bases
below; the engine dispatches on them with isinstance (docs/providers.md):

* SyncProvider: one awaited call, `generate()` (the hot path);
* StreamingProvider: `stream()` yields progress / OpenAI stream events, then a ProviderResult, or a
  Pending handle (when it is also a PollingProvider);
* PollingProvider: `submit()` returns a Pending handle; the engine's poller calls `poll(handles)`.

An adapter that is both Sync and Streaming (OpenAI) is called through `generate()` unless the
caller asked for a stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from ..core.types import CallContext, ImageRequest, Pending, PollOutcome, ProviderEvent, ProviderResult


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a provider's upstream can do; the router and the prompt pipeline enforce it."""

    edits: bool = False
    variations: bool = False
    masks: bool = False  # edits take a mask
    native_stream: bool = False  # emits OpenAI-shaped stream events itself
    max_n: int = 10  # images per request
    needs_key: bool = True
    # Takes a ratio (the pipeline's `extra["aspect_ratio"]`) instead of a pixel size; `aspect_ratios`
    # lists the ones it takes natively (empty: any, or the adapter fits one itself).
    takes_aspect_ratio: bool = False
    aspect_ratios: tuple[str, ...] = ()
    # The pixel sizes it takes, by upstream model prefix (first match; "" matches any model). Empty:
    # any WxH (the pipeline sends 1024 on the long side).
    sizes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def sizes_for(self, upstream_model: str) -> tuple[str, ...]:
        return next((v for k, v in self.sizes.items() if upstream_model.startswith(k)), ())


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """A built-in route a provider ships (config may add to or override these)."""

    name: str
    upstream_model: str
    aliases: tuple[str, ...] = ()
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""


class NoOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A provider without options of its own."""


class ProviderBase:
    """What every adapter declares. `settings` is the provider's ProviderSettings (config.py):
    name, base_url, api_key, timeout_s and its options (a mapping, validated at load against
    `Options`; typed as `self.options`)."""

    name: ClassVar[str]
    env_prefix: ClassVar[str]  # <PREFIX>_API_KEY / <PREFIX>_BASE_URL, unless named below
    # Variables named after the provider's own SDK conventions (REPLICATE_API_TOKEN, FAL_KEY...), when
    # they differ from <PREFIX>_API_KEY / <PREFIX>_BASE_URL; aliases are read when the first is unset.
    key_env: ClassVar[str | None] = None
    key_env_aliases: ClassVar[tuple[str, ...]] = ()
    base_url_env: ClassVar[str | None] = None
    # Provider options settable from the environment: variable -> option name (OPENAI_API_VERSION ->
    # api_version). YAML `providers.<name>.<option>` wins over the variable.
    option_envs: ClassVar[Mapping[str, str]] = {}
    default_base_url: ClassVar[str]
    capabilities: ClassVar[Capabilities] = Capabilities()
    builtin_routes: ClassVar[Sequence[RouteSpec]] = ()
    # Provider-level options (YAML providers.<name>.*, or per deployment) and the provider-specific
    # options a route may set (they may override the provider's: subclass Options). Both are
    # msgspec Structs with forbid_unknown_fields=True; core/options.py holds the generic ones.
    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    RouteOptions: ClassVar[type[msgspec.Struct]] = NoOptions
    # A Streaming adapter that yields Submitting right before it sends (after a wait of its own,
    # e.g. for an account slot): see core/types.Submitting. Others are marked before the call.
    signals_submit: ClassVar[bool] = False

    @classmethod
    def key_variable(cls) -> str:
        return cls.key_env or f"{cls.env_prefix}_API_KEY"

    @classmethod
    def base_url_variable(cls) -> str:
        return cls.base_url_env or f"{cls.env_prefix}_BASE_URL"

    def __init__(self, settings: Any) -> None:
        from .options import typed  # (import here: options.py imports this module)

        self.settings = settings
        self.options: Any = typed(type(self).Options, settings.options if settings is not None else {})
        self._route_opts: dict[int, tuple[object, Any]] = {}

    def route_options(self, ctx: CallContext) -> Any:
        """The call's options as this adapter's RouteOptions (provider › deployment › route merged).

        Built once per options mapping (the router keeps one per route and deployment) and cached.
        """
        m = ctx.options
        hit = self._route_opts.get(id(m))
        if hit is not None and hit[0] is m:
            return hit[1]
        from .options import typed

        value = typed(type(self).RouteOptions, m)
        if len(self._route_opts) > 1024:  # reloads make new mappings: keep the cache bounded
            self._route_opts.clear()
        self._route_opts[id(m)] = (m, value)  # (holding `m` keeps its id from being reused)
        return value

    @classmethod
    def check_route_options(cls, options: dict[str, Any], base_dir: Path) -> dict[str, Any]:
        """A load-time check beyond the option types (a file an option names, relative to `base_dir`, the
        config file's folder): the options to keep, or ValueError saying what is wrong. Runs at every
        load and reload, so a changed file is picked up then."""
        return options

    async def probe(self) -> bool | None:
        """Whether the upstream answers now, for upstreams that need no key (self-hosted ComfyUI,
        Automatic1111): /ready and `image-gateway models` show them usable only while it does. A
        cheap GET with a short timeout; never raises. None (the default): not probed, usable when
        it has a key (or needs none)."""
        return None

    async def close(self) -> None:
        return None


class SyncProvider(ProviderBase):
    """A synchronous upstream: one request, one answer."""

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        raise NotImplementedError


class StreamingProvider(ProviderBase):
    """An upstream that reports as it goes."""

    def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        """Yield Progress / StreamEvent, then a ProviderResult, or a Pending handle (a PollingProvider:
        after a Pending the engine stops iterating and its poller owns the job)."""
        raise NotImplementedError


class PollingProvider(ProviderBase):
    """A submit-then-poll upstream."""

    # Seconds between polls; None: the gateway's default (route option `poll_interval_s` wins).
    poll_interval_s: ClassVar[float | None] = None

    async def submit(self, req: ImageRequest, ctx: CallContext) -> Pending:
        raise NotImplementedError

    async def poll(self, handles: Sequence[dict[str, Any]], ctx: CallContext) -> Sequence[PollOutcome]:
        """Poll many pending handles at once (batched where the upstream allows; providers/http.py
        `poll_each` polls them one by one for an upstream without a batch query).

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
        raise NotImplementedError

    async def cancel(self, handle: dict[str, Any], ctx: CallContext) -> None:
        """Cancel an upstream task (DELETE /v1/images/tasks/{id}, a passed deadline). Best effort: it
        must not raise for a task that already ended. Default: nothing (the task runs out)."""
        return None


Provider = ProviderBase  # (the name the other layers use for "an adapter")


async def _one_result(provider: SyncProvider, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
    yield await provider.generate(req, ctx)


async def _submitted(provider: PollingProvider, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
    yield await provider.submit(req, ctx)


def events(provider: ProviderBase, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
    """A job's events whatever the provider's mode (the engine's dispatch when it iterates)."""
    if isinstance(provider, StreamingProvider):
        return provider.stream(req, ctx)
    if isinstance(provider, SyncProvider):
        return _one_result(provider, req, ctx)
    if isinstance(provider, PollingProvider):
        return _submitted(provider, req, ctx)
    raise TypeError(f"{type(provider).__name__} subclasses none of SyncProvider, StreamingProvider, PollingProvider")
