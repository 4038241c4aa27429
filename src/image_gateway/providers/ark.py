"""Volcengine Ark (火山方舟): ByteDance's Seedream 4.x / 3.0 and SeedEdit 3.0 (docs/protocols.md §12,
"Volcengine Ark").

References: Volcengine Ark 图片生成 API, https://www.volcengine.com/docs/82379/1541523 (request fields,
sizes, 组图 `sequential_image_generation`, streaming), 错误码 https://www.volcengine.com/docs/82379/1299023
(error codes and statuses), and the official SDK's wire types (volcengine/volcengine-python-sdk
volcenginesdkarkruntime/resources/images/images.py and types/images/*.py).

One Bearer-authenticated `POST {ARK_BASE_URL}/images/generations` with an OpenAI-like JSON body and Ark's
own fields: `size` as WxH (fitted to the model's pixel range) or 1K/2K/4K (`image_size` request field),
`seed`, `guidance_scale`, `watermark` (false unless asked), `image` (URL or data URL) for references and
edits. `n` > 1 on Seedream 4.x is one call asking for a set (`sequential_image_generation: auto` with
`max_images`: the model may make fewer); on 3.0 / SeedEdit it is n parallel calls. `stream: true` on
4.x reads Ark's SSE (`image_generation.partial_succeeded` per image, `partial_failed`, `completed`):
each finished image is relayed as a partial image while the set goes on. Result URLs expire after
24 h, so `url` answers are re-hosted (`rehost` option). Errors are `{error: {code, message}}`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

import aiohttp
import msgspec

from ..core.types import CallContext, GeneratedImage, ImageRequest, Progress, ProviderEvent, ProviderResult
from ..errors import UpstreamError
from .ark_wire import SSE, body, error_of, family, image_of, images_of
from .base import Capabilities, RouteSpec, StreamingProvider, SyncProvider
from .http import HttpProvider, connection_error, fan_out

PATH = "/images/generations"
MAX_N = 15


def _routes() -> tuple[RouteSpec, ...]:
    return (
        RouteSpec("seedream-4.5", "doubao-seedream-4-5-251128", description="Ark Seedream 4.5"),
        RouteSpec("seedream-4.0", "doubao-seedream-4-0-250828", description="Ark Seedream 4.0"),
        RouteSpec("seedream-3.0", "doubao-seedream-3-0-t2i-250415", description="Ark Seedream 3.0 text-to-image"),
        RouteSpec("seededit-3.0", "doubao-seededit-3-0-i2i-250628", description="Ark SeedEdit 3.0 (edits)"),
    )


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    watermark: bool = False  # Ark's own default is true; a gateway caller rarely wants the mark


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


class ArkProvider(HttpProvider, SyncProvider, StreamingProvider):
    name: ClassVar[str] = "ark"
    env_prefix: ClassVar[str] = "ARK"
    default_base_url: ClassVar[str] = "https://ark.cn-beijing.volces.com/api/v3"
    label: ClassVar[str] = "Ark"
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, max_n=MAX_N)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions

    def _headers(self, ctx: CallContext) -> dict[str, str]:
        return {"Authorization": f"Bearer {ctx.api_key}"}

    def _plan(self, req: ImageRequest, ctx: CallContext, stream: bool) -> tuple[dict[str, Any], int]:
        """(body, calls): a 4.x set is one call; other families make one image per call."""
        o: RouteOptions = self.route_options(ctx)
        sets = family(ctx.upstream_model) == "4x"
        b = body(req, ctx.upstream_model, o.watermark, stream and sets, req.n if sets else 1)
        return b, 1 if sets else req.n

    def _result(self, images: list[GeneratedImage], size: str | None, usage: Any, ctx: CallContext,
                req: ImageRequest, sent: dict[str, Any]) -> ProviderResult:
        meta: dict[str, Any] = {}
        shown = size or sent.get("size")
        if isinstance(shown, str) and "x" in shown:
            meta["size"] = shown
        return ProviderResult(images, usage=usage if isinstance(usage, dict) else None, meta=meta)

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        b, calls = self._plan(req, ctx, False)
        answers = await fan_out([self._call(b, ctx) for _ in range(calls)])
        images = [img for imgs, _size, _usage in answers for img in imgs]
        usage = answers[0][2] if calls == 1 else None
        return self._result(images, answers[0][1], usage, ctx, req, b)

    async def _call(self, b: dict[str, Any], ctx: CallContext) -> tuple[list[GeneratedImage], str | None, Any]:
        a = await self.call(self.base_url + PATH, ctx, json=b, headers=self._headers(ctx))
        data = a.json()
        if a.status >= 400 or (isinstance(data, dict) and isinstance(data.get("error"), dict)
                               and not data.get("data")):
            raise error_of(a.status, data, a.body, a.headers, [ctx.api_key])
        images, size = images_of(data, [ctx.api_key])
        return images, size, data.get("usage") if isinstance(data, dict) else None

    async def stream(self, req: ImageRequest, ctx: CallContext) -> AsyncIterator[ProviderEvent]:
        b, _ = self._plan(req, ctx, True)
        if not b.get("stream"):  # 3.0 / SeedEdit: no stream upstream, one answer
            yield await self.generate(req, ctx)
            return
        secrets = [ctx.api_key]
        try:
            resp = await self.session.post(self.base_url + PATH, data=msgspec.json.encode(b),
                                           headers={**self._headers(ctx), "Content-Type": "application/json"})
        except (aiohttp.ClientError, TimeoutError) as e:
            raise connection_error(e, self.label) from None
        async with resp:
            if resp.status >= 400:
                raw = await resp.read()
                raise error_of(resp.status, _json(raw), raw, resp.headers, secrets)
            if resp.content_type != "text/event-stream":
                # Ark may answer a stream request with one JSON body (e.g. a model without streaming).
                raw = await resp.read()
                data = _json(raw)
                if isinstance(data, dict) and isinstance(data.get("error"), dict) and not data.get("data"):
                    raise error_of(resp.status, data, raw, resp.headers, secrets)
                images, size = images_of(data, secrets)
                yield self._result(images, size, data.get("usage") if isinstance(data, dict) else None, ctx, req, b)
                return
            async for ev in self._events(resp, req, ctx, b):
                yield ev

    async def _events(self, resp: aiohttp.ClientResponse, req: ImageRequest, ctx: CallContext,
                      b: dict[str, Any]) -> AsyncIterator[ProviderEvent]:
        secrets = [ctx.api_key]
        images: list[GeneratedImage] = []
        failed: dict[str, Any] | None = None
        size, usage = None, None
        parser = SSE()

        def take(ev: dict[str, Any]) -> Progress | None:
            nonlocal failed, size, usage
            kind = ev.get("type")
            if kind == "image_generation.partial_succeeded":
                img = image_of(ev)
                if img is None:
                    return None
                images.append(img)
                size = size or ev.get("size")
                return Progress(min(99, 100 * len(images) // max(1, req.n)), preview=img)
            if kind == "image_generation.partial_failed" and failed is None:
                failed = ev.get("error") if isinstance(ev.get("error"), dict) else {"message": "image failed"}
            elif kind == "image_generation.completed":
                usage = ev.get("usage")
            elif isinstance(ev.get("error"), dict) and kind is None:
                raise error_of(200, ev, b"", {}, secrets)
            return None

        try:
            async for chunk in resp.content.iter_any():
                for ev in parser.feed(chunk):
                    p = take(ev)
                    if p is not None:
                        yield p
            for ev in parser.close():
                p = take(ev)
                if p is not None:
                    yield p
        except (aiohttp.ClientError, TimeoutError) as e:
            if not images:
                raise connection_error(e, self.label) from None
            # The set broke off after some images: deliver those (they are billed) rather than nothing.
        if not images:
            if failed is not None:
                raise error_of(200, {"error": failed}, b"", {}, secrets)
            raise UpstreamError("Ark's stream ended without an image.", code="upstream_no_image")
        yield self._result(images, size if isinstance(size, str) else None, usage, ctx, req, b)


def _json(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw) if raw.strip() else None
    except msgspec.DecodeError:
        return None

