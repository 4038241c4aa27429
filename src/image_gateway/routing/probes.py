"""Readiness of keyless self-hosted upstreams (ComfyUI, Automatic1111): every endpoint whose adapter
implements ProviderBase.probe() is asked at start-up and then in the background every
PROBE_INTERVAL_S; the answer is kept on the Endpoint, where /ready, usable_providers() and the
operator's view read it. Requests never wait for a probe (the hot path is untouched).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from ..providers.base import ProviderBase
from .deployments import Endpoint, Pool

log = logging.getLogger("image_gateway.routing")


def probed(ep: Endpoint) -> bool:
    return type(ep.provider).probe is not ProviderBase.probe


async def probe_all(pool: Pool) -> None:
    """Probe every probing endpoint of `pool` at once; a change is logged (never with a key or URL)."""
    eps = [ep for ep in pool.endpoints if probed(ep)]
    if not eps:
        return
    answers = await asyncio.gather(*(ep.provider.probe() for ep in eps), return_exceptions=True)
    for ep, answer in zip(eps, answers, strict=True):
        ok = answer if isinstance(answer, bool) or answer is None else False
        if ok is not ep.reachable and ep.reachable is not None:
            log.warning("self-hosted upstream %s", "reachable again" if ok else "unreachable",
                        extra={"provider": ep.settings.name})
        ep.reachable = ok


async def probe_forever(pool_of: Callable[[], Pool], interval_s: float) -> None:
    """Re-probe the current pool (a reload swaps it) until cancelled."""
    while True:
        await asyncio.sleep(max(0.05, interval_s))
        with contextlib.suppress(Exception):  # one failed round must not end the loop
            await probe_all(pool_of())
