"""Provider instances and deployments for one Config snapshot (a Pool), rebuilt on reload.

An Endpoint is one provider instance (one pooled HTTP session) for one set of settings (base
URL, key, timeout, options); a Deployment is a route's use of an endpoint, with its own circuit
breaker. A route without `deployments:` has one deployment on its provider's default endpoint.

On reload the new Pool reuses every endpoint whose settings did not change (warm connections,
and in-flight jobs keep a working session) and keeps the health of unchanged deployments;
endpoints that disappeared are closed once the requests still using the old Pool have drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.settings import Config, ProviderSettings, Route
from ..providers.base import Provider
from ..providers.registry import PROVIDER_CLASSES
from .health import OPEN, Health

if TYPE_CHECKING:
    from .shared_health import HealthSync

log = logging.getLogger("image_gateway.routing")


@dataclass(eq=False)
class Endpoint:
    settings: ProviderSettings
    provider: Provider
    inflight: int = 0  # attempts running on it right now (least-busy balancing)
    reachable: bool | None = None  # its adapter's last probe (routing/probes.py); None: not probed


@dataclass(eq=False)
class Deployment:
    route: str
    label: str
    endpoint: Endpoint
    health: Health

    @property
    def provider_name(self) -> str:
        return self.endpoint.settings.name


class Pool:
    def __init__(self, cfg: Config, previous: Pool | None = None) -> None:
        self.endpoints: list[Endpoint] = []
        self.inflight = 0  # requests routed through this pool that have not ended
        # REDIS_URL: breaker/pause changes shared with the other processes (routing/shared_health.py)
        self.sync: HealthSync | None = previous.sync if previous else None
        old_endpoints = previous.endpoints if previous else []
        self.default: dict[str, Endpoint] = {n: self._endpoint(s, old_endpoints) for n, s in cfg.providers.items()}
        self.by_route: dict[str, list[Deployment]] = {}
        self.direct: dict[str, list[Deployment]] = {}  # routes of `<provider>/<model>` names, as first used
        for route in cfg.routes.values():
            old = {d.label: d for d in (previous.by_route.get(route.name, []) if previous else [])}
            deps: list[Deployment] = []
            if not route.deployments:
                deps.append(self._deployment(route.name, route.provider, self.default[route.provider], old))
            base = cfg.providers[route.provider]
            for d in route.deployments:
                settings = ProviderSettings(
                    route.provider, d.base_url or base.base_url, d.api_key or base.api_key,
                    d.timeout_s if d.timeout_s is not None else base.timeout_s, {**base.options, **d.options},
                    base.adapter)
                deps.append(self._deployment(route.name, d.label, self._endpoint(settings, old_endpoints), old))
            self.by_route[route.name] = deps

    def _endpoint(self, settings: ProviderSettings, old: list[Endpoint]) -> Endpoint:
        for ep in (*self.endpoints, *old):
            if ep.settings == settings:
                if ep not in self.endpoints:
                    self.endpoints.append(ep)
                return ep
        ep = Endpoint(settings, (settings.adapter or PROVIDER_CLASSES[settings.name])(settings))
        self.endpoints.append(ep)
        return ep

    @staticmethod
    def _deployment(route: str, label: str, ep: Endpoint, old: dict[str, Deployment]) -> Deployment:
        prev = old.get(label)
        health = prev.health if prev is not None and prev.endpoint is ep else Health()
        return Deployment(route, label, ep, health)

    @property
    def providers(self) -> dict[str, Provider]:
        return {n: ep.provider for n, ep in self.default.items()}

    def deployments(self, route: Route) -> list[Deployment]:
        deps = self.by_route.get(route.name)
        if deps is None:
            deps = self.direct.get(route.name) if route.direct else None
            if deps is None:  # a direct name's first use, or a route from an older snapshot that is gone now
                deps = [Deployment(route.name, route.provider, self.default[route.provider], Health())]
                if route.direct:  # kept, so its breaker counts across requests (bounded: callers pick names)
                    if len(self.direct) >= 1024:
                        self.direct.clear()
                    self.direct[route.name] = deps
        return deps

    def all_deployments(self) -> Iterable[Deployment]:
        for deps in self.by_route.values():
            yield from deps

    async def close(self, keep: Iterable[Endpoint] = ()) -> None:
        kept = set(map(id, keep))
        for ep in self.endpoints:
            if id(ep) not in kept:
                with contextlib.suppress(Exception):
                    await ep.provider.close()

    async def retire(self, successor: Pool, max_wait_s: float) -> None:
        """Close the endpoints the successor dropped, once requests still on this pool are done."""
        loop = asyncio.get_running_loop()
        end = loop.time() + max_wait_s
        while self.inflight > 0 and loop.time() < end:  # noqa: ASYNC110 (rare: once per reload)
            await asyncio.sleep(0.2)
        if self.inflight > 0:
            log.warning("closing an old config's upstream sessions with requests still running",
                        extra={"inflight": self.inflight})
        await self.close(keep=successor.endpoints)


def pick(deps: list[Deployment], now: float, tried: set[int]) -> tuple[Deployment | None, float]:
    """The deployment to try next and how long to wait for it (an upstream's Retry-After).

    Healthy and untried first, then the least busy; ties are broken at random so equal
    deployments share the load. Open breakers are skipped (no waiting for a cooldown); a paused
    one (a capacity answer's Retry-After) may be waited for, if its breaker would let a request
    through when the pause ends.
    """
    best: Deployment | None = None
    best_key: tuple[bool, int, float] | None = None
    waitable: Deployment | None = None
    for d in deps:
        h = d.health
        if h.available(now):
            key = (id(d) in tried, d.endpoint.inflight, random.random() if len(deps) > 1 else 0.0)
            if best_key is None or key < best_key:
                best, best_key = d, key
        elif h.not_before > now and not h.probing and (h.state != OPEN or h.opened_until <= h.not_before):
            if waitable is None or h.not_before < waitable.health.not_before:
                waitable = d
    if best is not None:
        return best, 0.0
    if waitable is not None:
        return waitable, waitable.health.not_before - now
    return None, 0.0
