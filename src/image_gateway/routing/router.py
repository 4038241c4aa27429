"""Resolves a logical model name to a route and runs it through the engine with the right key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..config import Config, Route
from ..engine.engine import Engine
from ..errors import AuthError, InvalidRequest, ModelNotFound, redact
from ..providers.base import CallContext, ImageRequest, Provider, ProviderEvent
from .keys import KeySource


class Router:
    def __init__(self, cfg: Config, providers: Mapping[str, Provider], engine: Engine) -> None:
        self.cfg = cfg
        self.providers = providers
        self.engine = engine

    def resolve(self, model: str) -> Route:
        route = self.cfg.resolve(model)
        if route is None:
            raise ModelNotFound(f"The model '{model}' does not exist. GET /v1/models lists the available models.",
                                param="model")
        return route

    def context(self, route: Route, keys: KeySource, request_id: str) -> CallContext:
        provider = self.providers[route.provider]
        settings = self.cfg.providers[route.provider]
        key = keys.for_provider(settings.api_key)
        if key is None and provider.capabilities.needs_key:
            prefix = type(provider).env_prefix
            raise AuthError(
                f"No API key for provider '{route.provider}' (model '{route.name}'). Set {prefix}_API_KEY on the "
                "gateway, or send your own key in the X-Provider-Key header.")
        deadline_s = float(route.options.get("deadline_s", self.cfg.job_deadline_s))
        options: dict[str, Any] = {**settings.options, **route.options}
        return CallContext(route.upstream_model, key, options, request_id,
                           asyncio.get_running_loop().time() + deadline_s)

    def check(self, route: Route, req: ImageRequest) -> None:
        caps = self.providers[route.provider].capabilities
        if req.operation == "edit" and not caps.edits:
            raise InvalidRequest(f"The model '{route.name}' does not support image edits.", param="model",
                                 code="unsupported_operation")
        if req.operation == "variation" and not caps.variations:
            raise InvalidRequest(f"The model '{route.name}' does not support image variations.", param="model",
                                 code="unsupported_operation")

    async def events(self, route: Route, req: ImageRequest, keys: KeySource,
                     request_id: str) -> AsyncIterator[ProviderEvent]:
        self.check(route, req)
        ctx = self.context(route, keys, request_id)
        provider = self.providers[route.provider]
        try:
            async for ev in self.engine.events(provider, req, ctx):
                yield ev
        except Exception as e:
            # Last line of defence for key hygiene: nothing key-shaped leaves in a message.
            if hasattr(e, "message"):
                e.message = redact(e.message, [ctx.api_key, *keys.secrets(), *self.cfg.secrets()])
            raise

    def provider_of(self, route: Route) -> Provider:
        return self.providers[route.provider]
