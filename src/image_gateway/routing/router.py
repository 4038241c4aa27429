"""Resolves a logical model name to its candidates and runs a request through them.

Candidates are the route's deployments (least-busy, healthy first), then each fallback route's
(the route's `fallbacks`, else the config's `default_fallbacks`). A failed attempt is judged by
routing/policy.py: retried with back-off on the same route, moved to the next candidate, or
returned. One Router belongs to one Config snapshot; a reload builds a new one, and a request
keeps the Router it started on until it ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from typing import Any

from .. import metrics
from ..core.settings import Config, Route
from ..core.types import CallContext, ImageRequest, ProviderEvent, ProviderResult
from ..engine.engine import Engine
from ..engine.jobs import Job
from ..errors import AuthError, GatewayError, InvalidRequest, ModelNotFound, scrub
from ..media.egress import policy_for
from ..providers.base import Provider
from .attempt import Attempt
from .deployments import Deployment, Pool, pick
from .keys import KeySource
from .policy import Verdict, backoff_s, classify

log = logging.getLogger("image_gateway.routing")


class Router:
    def __init__(self, cfg: Config, pool: Pool, engine: Engine) -> None:
        self.cfg = cfg
        self.pool = pool
        self.providers: dict[str, Provider] = pool.providers  # default instance per provider
        self.engine = engine
        self.retired: list[Pool] = []  # older pools still draining (for the in-flight gauge)
        self._chains: dict[str, list[Route]] = {}
        self._options: dict[tuple[str, int], dict[str, Any]] = {}
        self.egress = policy_for(cfg.private_url_allowlist)  # handed to adapters on every CallContext

    def resolve(self, model: str) -> Route:
        route = self.cfg.resolve(model)
        if route is None:
            raise ModelNotFound(f"The model '{model}' does not exist. GET /v1/models lists the available models.",
                                param="model")
        return route

    def inflight(self) -> int:
        return self.pool.inflight + sum(p.inflight for p in self.retired)

    def chain(self, route: Route) -> list[Route]:
        """The route, then its fallback routes (aliases resolved, each once)."""
        cached = self._chains.get(route.name)
        if cached is not None and cached[0] is route:
            return cached
        out = [route]
        for name in route.fallbacks or self.cfg.default_fallbacks:
            fb = self.cfg.resolve(name)
            if fb is not None and all(fb.name != r.name for r in out):
                out.append(fb)
        if len(self._chains) >= 4096:  # direct `<provider>/<model>` names are the callers' choice: bounded
            self._chains.clear()
        self._chains[route.name] = out
        return out

    def _ctx(self, route: Route, dep: Deployment, keys: KeySource, request_id: str, deadline: float) -> CallContext:
        settings = dep.endpoint.settings
        key = keys.for_provider(settings.api_key)
        if key is None and dep.endpoint.provider.capabilities.needs_key:
            variable = type(dep.endpoint.provider).key_variable()
            raise AuthError(
                f"No API key for provider '{route.provider}' (model '{route.name}'). Set {variable} on the "
                "gateway, or send your own key in the X-Provider-Key header.")
        # The merged options are the same for every request on this route and deployment (and a
        # Router lives as long as its config): merged once. Providers only read them.
        options = self._options.get((route.name, id(dep)))
        if options is None:
            if len(self._options) >= 4096:  # (bounded, as `_chains`)
                self._options.clear()
            options = self._options[(route.name, id(dep))] = {**settings.options, **route.options}
        return CallContext(route.upstream_model, key, options, request_id, deadline, self.egress)

    def deadline_s(self, route: Route) -> float:
        return float(route.options.get("deadline_s", self.cfg.job_deadline_s))

    def supports(self, route: Route, req: ImageRequest) -> bool:
        return self.unsupported(route, req) is None

    def unsupported(self, route: Route, req: ImageRequest) -> InvalidRequest | None:
        """Why the route's provider cannot serve `req` (its capabilities), or None."""
        caps = self.providers[route.provider].capabilities
        if req.n > caps.max_n:
            return InvalidRequest(f"The model '{route.name}' makes at most {caps.max_n} images per request.",
                                  param="n", code="invalid_value")
        if req.operation == "generate":
            return None
        if not (caps.edits if req.operation == "edit" else caps.variations):
            what = "image edits" if req.operation == "edit" else "image variations"
            return InvalidRequest(f"The model '{route.name}' does not support {what}.", param="model",
                                  code="unsupported_operation")
        if req.mask is not None and not caps.masks:
            return InvalidRequest(f"The model '{route.name}' does not take a mask; send the image(s) and "
                                  "describe the edit.", param="mask", code="unsupported_parameter")
        return None

    def check(self, route: Route, req: ImageRequest) -> None:
        err = self.unsupported(route, req)
        if err is not None:
            raise err

    def usable_providers(self) -> list[str]:
        """Providers with a key (or needing none) and at least one deployment not cooling down (nor, for a
        self-hosted one, unreachable at its last probe)."""
        now = time.monotonic()  # asyncio's default clock, and uvloop's
        out = []
        for name, ep in self.pool.default.items():
            deps = [d for d in self.pool.all_deployments() if d.provider_name == name]
            needs_key = ep.provider.capabilities.needs_key
            if deps:
                ok = any((not needs_key or d.endpoint.settings.api_key) and d.health.in_service(now)
                         and d.endpoint.reachable is not False for d in deps)
            else:
                ok = (not needs_key or bool(ep.settings.api_key)) and ep.reachable is not False
            if ok:
                out.append(name)
        return out

    def unreachable_providers(self) -> list[str]:
        """Self-hosted providers with an endpoint that failed its last readiness probe (routing/probes.py)."""
        return sorted({ep.settings.name for ep in self.pool.endpoints if ep.reachable is False})

    def provider_of(self, route: Route) -> Provider:
        return self.pool.deployments(route)[0].endpoint.provider

    @staticmethod
    def translate(req: ImageRequest, primary: Route, target: Route) -> ImageRequest:
        """The request anew for a fallback route: the primary's defaults out, the target's in."""
        out = dataclasses.replace(req, extra=dict(req.extra))
        fields = {f.name for f in dataclasses.fields(ImageRequest)}
        for k, v in primary.defaults.items():
            if k in fields and getattr(out, k) == v and k not in ("prompt", "model", "n"):
                setattr(out, k, None)
            elif out.extra.get(k) == v:
                del out.extra[k]
        for k, v in target.defaults.items():
            if k in fields and getattr(out, k) is None:
                setattr(out, k, v)
            elif k not in fields and k not in out.extra:
                out.extra[k] = v
        return out

    async def result(self, route: Route, req: ImageRequest, keys: KeySource, request_id: str,
                     state: MutableMapping[str, Any] | None = None, job: Job | None = None) -> ProviderResult:
        """The request's result, for a caller that wants no events (not streamed): `events` as a plain
        coroutine, two async-generator layers fewer on the hot path. Fills `state` like `events`;
        `job` as for `events`."""
        state = state if state is not None else {}
        plan = self._plan(route, req, keys, request_id, state)
        self.pool.inflight += 1
        try:
            for attempt in plan:
                if attempt.wait > 0:
                    await asyncio.sleep(attempt.wait)
                attempt.start(state)
                try:
                    result = await self.engine.result(attempt.provider, attempt.req, attempt.ctx, job)
                except GatewayError as e:
                    self._judge(attempt, e, keys, request_id, sent=False)
                    continue
                finally:
                    attempt.end()
                attempt.ok(state)
                return result
            raise AssertionError("unreachable: the plan ends by raising")  # pragma: no cover
        finally:
            self.pool.inflight -= 1

    async def events(self, route: Route, req: ImageRequest, keys: KeySource, request_id: str,
                     state: MutableMapping[str, Any] | None = None, job: Job | None = None,
                     ) -> AsyncIterator[ProviderEvent]:
        """Every event of the request; the last is the ProviderResult. Fills `state` (the ASGI scope's
        state: route, provider, deployment, attempts, upstream_ms) for the access log and headers.
        `job`: the caller's (api/jobs.py), which an upstream handle attaches to; None makes one when
        needed."""
        state = state if state is not None else {}
        plan = self._plan(route, req, keys, request_id, state)
        sent = False  # a streamed event reached the caller: no fallback from here on
        self.pool.inflight += 1
        try:
            for attempt in plan:
                if attempt.wait > 0:
                    await asyncio.sleep(attempt.wait)
                attempt.start(state)
                try:
                    async for ev in self.engine.events(attempt.provider, attempt.req, attempt.ctx, job):
                        if isinstance(ev, ProviderResult):
                            attempt.ok(state)
                        elif req.stream:
                            sent = True
                        yield ev
                    return
                except GatewayError as e:
                    self._judge(attempt, e, keys, request_id, sent)
                finally:
                    attempt.end()
        finally:
            self.pool.inflight -= 1

    def _plan(self, route: Route, req: ImageRequest, keys: KeySource, request_id: str,
              state: MutableMapping[str, Any]) -> Iterator[Attempt]:
        """The attempts to make, in order (a plain generator: cheap). The caller runs each one; a failed
        one comes back here judged (`_judge`), which picks what follows: a re-send after back-off, the
        next deployment or the next fallback route. Ends by raising when nothing is left.

        A route whose deployments are all paused by a capacity answer is put aside while fallback
        routes follow it, and waited for (up to `max_retry_after_s`) only once they have failed too."""
        self.check(route, req)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_s(route)
        rs = self.cfg.router
        chain = self.chain(route)
        attempts = 0
        last: GatewayError | None = None
        held: dict[int, float] | None = None  # deployment → end of a pause told to a caller's own key
        busy: Attempt | None = None  # the latest such attempt
        deferred: list[tuple[Route, ImageRequest, list[Deployment], set[int], int, int]] | None = None
        i, n = 0, len(chain)
        while True:
            if i < n:
                r = chain[i]
                i += 1
                if i > 1:
                    if not self.supports(r, req):
                        continue
                    prev = str(state.get("route", route.name))
                    metrics.FALLBACKS.labels(prev, r.name).inc()
                    log.warning("falling back", extra={"request_id": request_id, "from_route": prev,
                                                       "to_route": r.name})
                rreq = req if i == 1 else self.translate(req, route, r)
                deps = list(self.pool.deployments(r))
                budget = max(1 + int(r.options.get("retries", rs.retries)), len(deps))
                tried: set[int] = set()
                sends = 0
            elif deferred:  # every fallback failed: back to a paused route, to wait for it
                r, rreq, deps, tried, sends, budget = deferred.pop(0)
            else:
                break
            while sends < budget and deps:
                now = loop.time()
                dep, wait = pick(deps, now, tried)
                if dep is None:
                    break  # every deployment of this route is cooling down
                if held is not None and id(dep) in held:
                    wait = max(wait, held[id(dep)] - now)
                if wait > 0 and i < n:  # paused ("not now"): the fallbacks first
                    if deferred is None:
                        deferred = []
                    deferred.append((r, rreq, deps, tried, sends, budget))
                    break
                if id(dep) in tried:  # a re-send to one that failed: back off first
                    wait = max(wait, backoff_s(sends, rs.backoff_s, rs.backoff_max_s))
                if wait > rs.max_retry_after_s or now + wait >= deadline:
                    break
                try:
                    ctx = self._ctx(r, dep, keys, request_id, deadline)
                except AuthError as e:  # no key for this deployment: the others may have one
                    last = last or e
                    deps.remove(dep)
                    continue
                sends += 1
                attempts += 1
                tried.add(id(dep))
                attempt = Attempt(self, r, rreq, dep, ctx, attempts, wait, retry=sends > 1)
                yield attempt  # back here only when it failed
                last = attempt.error
                if attempt.held:  # a caller's own key was told "not now": this request waits, no one else
                    if held is None:
                        held = {}
                    held[id(dep)] = attempt.until
                    busy = attempt
                if attempt.verdict is Verdict.NEXT_ROUTE:
                    break
                if attempt.verdict is Verdict.NEXT:
                    deps.remove(dep)
        raise self._unserved(route, chain, last, busy, loop.time())

    def _unserved(self, route: Route, chain: list[Route], last: GatewayError | None, busy: Attempt | None,
                  now: float) -> GatewayError:
        """What to answer when no candidate served. A capacity answer wins (it says when to come back),
        with a Retry-After no longer than what is left of its pause; then the last failure; then 503."""
        if last is not None and last.capacity:
            return last
        deps = [d for r in chain for d in self.pool.deployments(r)]
        paused = [d for d in deps if d.health.paused_answer(now) is not None]
        if paused:
            first = min(paused, key=lambda d: d.health.not_before)
            answer = first.health.busy
            assert answer is not None
            # The soonest moment anything may be sent again: this pause's end, or an earlier half-open.
            ready = min(t for d in deps if (t := d.health.ready_at()) > now)
            return answer.again_after(ready - now)
        if busy is not None and busy.error is not None and busy.until > now:  # a caller's own key's pause
            return busy.error.again_after(busy.until - now)
        if last is not None:
            return last
        return _all_cooling(route, deps, now)

    def _judge(self, attempt: Attempt, e: GatewayError, keys: KeySource, request_id: str, sent: bool) -> None:
        """A failed attempt: scrub keys from every field, decide what follows, raise when nothing does."""
        ctx = attempt.ctx
        scrub(e, [ctx.api_key, *keys.secrets(), *self.cfg.secrets()])
        verdict = Verdict.STOP if sent else classify(e, attempt.route.options)
        attempt.failed(e, verdict, request_id, ctx.api_key == attempt.dep.endpoint.settings.api_key)
        if verdict is Verdict.STOP:
            raise e


def _all_cooling(route: Route, deps: list[Deployment], now: float) -> GatewayError:
    ready = min((d.health.ready_at() for d in deps), default=now + 1)
    headers = {"Retry-After": str(max(1, math.ceil(ready - now)))}
    if all(d.health.in_service(now) for d in deps):  # only paused by an upstream's Retry-After
        return GatewayError(f"The upstream for the model '{route.name}' asked for a pause (rate limit); "
                            "try again after the Retry-After delay.", status=429, type="requests",
                            code="rate_limit_exceeded", headers=headers, retryable=True)
    return GatewayError(
        f"Every upstream for the model '{route.name}' is cooling down after repeated failures; try again shortly.",
        status=503, type="server_error", code="upstream_unavailable", headers=headers, retryable=True)
