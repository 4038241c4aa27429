"""The engine runs one job against one provider and yields its events.

Sync providers finish inside `run()`; async ones hand back a Pending handle that is polled
until it ends. Either way the caller sees one stream of events that ends with a ProviderResult.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from ..errors import UpstreamError, UpstreamTimeout
from ..providers.base import CallContext, ImageRequest, Pending, Provider, ProviderEvent, ProviderResult


class Engine:
    def __init__(self, poll_interval_s: float = 2.0) -> None:
        self.poll_interval_s = poll_interval_s

    async def events(self, provider: Provider, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        """Every event of the job; the last one is the ProviderResult. Bounded by ctx.deadline."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout_at(ctx.deadline):
                pending: Pending | None = None
                async for ev in provider.run(req, ctx):
                    if isinstance(ev, Pending):
                        pending = ev
                        break
                    yield ev
                    if isinstance(ev, ProviderResult):
                        return
                if pending is None:
                    raise UpstreamError(f"{provider.name} ended without a result")
                async for ev in self._poll(provider, pending, ctx):
                    yield ev
        except TimeoutError:
            left = ctx.deadline - loop.time()
            raise UpstreamTimeout(f"the image job did not finish before its deadline ({max(left, 0):.0f} s left)",
                                  retryable=False) from None

    async def _poll(self, provider: Provider, pending: Pending, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        interval = float(ctx.options.get("poll_interval_s", self.poll_interval_s))
        while True:
            await asyncio.sleep(interval)
            (ev,) = await provider.poll([pending.handle], ctx)
            yield ev
            if isinstance(ev, ProviderResult):
                return

    async def run(self, provider: Provider, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        async for ev in self.events(provider, req, ctx):
            if isinstance(ev, ProviderResult):
                return ev
        raise UpstreamError(f"{provider.name} ended without a result")
