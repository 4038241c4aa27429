"""Stability AI's Stable Image API (v2beta): Ultra, Core and Stable Diffusion 3.5; inpaint and
search-and-replace for /v1/images/edits (docs/protocols.md §11, "Stability AI").

Reference: Stability platform API reference, https://platform.stability.ai/docs/api-reference
(Generate: /v2beta/stable-image/generate/{ultra,core,sd3}; Edit: /v2beta/stable-image/edit/inpaint and
/search-and-replace; read as its generated client docs in anoochit/stability_api doc/GenerateApi.md,
doc/EditApi.md, doc/ContentModerationResponse.md, and the v2beta schemas in api-evangelist/stability-ai).

Every call is one multipart/form-data POST with `Accept: application/json`, answered with
`{image: <base64>, finish_reason: SUCCESS|CONTENT_FILTERED, seed}`: one image per call, so `n` is n
parallel calls (consecutive seeds when the caller gave one). `aspect_ratio` is an enum (the nearest
to `size` is sent; edits keep the input's shape); `output_format` png/jpeg/webp. The sd3 endpoint takes
the model (`sd3.5-large`, ...) as a `model` field. Errors are `{id, name, errors: [...]}`.

Edits: a mask or neither → inpaint (Stability reads the alpha channel without a mask); a
`search_prompt` request field, or route option `edit: search-and-replace` → search-and-replace.
Options (provider or route): style_preset, negative_prompt, edit, grow_mask.
"""

from __future__ import annotations

import base64
import binascii
import io
import random
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import aiohttp
import msgspec

from ..core.types import CallContext, GeneratedImage, ImageRequest, InputImage, ProviderResult
from ..errors import GatewayError, InvalidRequest, UpstreamError
from ..media.sizes import nearest_ratio_of, requested_shape
from .base import Capabilities, RouteSpec, SyncProvider
from .errmap import Kind, kind_of_status, mapped, summary
from .http import HttpProvider, fan_out
from .references import caller_bytes

RATIOS = ("16:9", "1:1", "21:9", "2:3", "3:2", "4:5", "5:4", "9:16", "9:21")
FORMATS = ("png", "jpeg", "webp")
GENERATE = "/v2beta/stable-image/generate/"
EDIT = "/v2beta/stable-image/edit/"
MAX_N = 4
MAX_SEED = 4294967294
INPUT_MAX = 10 << 20  # the API's request limit


def _routes() -> tuple[RouteSpec, ...]:
    return (
        RouteSpec("stable-image-ultra", "stable-image-ultra", description="Stability Stable Image Ultra"),
        RouteSpec("stable-image-core", "stable-image-core", description="Stability Stable Image Core"),
        *(RouteSpec(m, m, description=f"Stability Stable Diffusion {m[3:]} (generate/sd3)")
          for m in ("sd3.5-large", "sd3.5-large-turbo", "sd3.5-medium")),
    )


class Options(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    style_preset: str | None = None  # ultra/core: 3d-model, anime, photographic, ...
    negative_prompt: str | None = None
    edit: Literal["inpaint", "search-and-replace"] = "inpaint"
    grow_mask: int | None = None


class RouteOptions(Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    pass


def endpoint_for(model: str) -> tuple[str, str | None]:
    """(path, the sd3 endpoint's `model` field) for an upstream model name."""
    if model in ("stable-image-ultra", "ultra"):
        return GENERATE + "ultra", None
    if model in ("stable-image-core", "core"):
        return GENERATE + "core", None
    return GENERATE + "sd3", model


def whole(raw: Any, name: str, top: int) -> int | None:
    """A whole number in [0, top] from JSON or a form field; None when absent."""
    if raw is None or raw == "":
        return None
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit() and len(text) <= 12) or int(text) > top:
        raise InvalidRequest(f"'{name}' must be a whole number between 0 and {top}.", param=name,
                             code="invalid_value")
    return int(text)


def _text(req: ImageRequest, name: str, default: str | None) -> str | None:
    v = req.extra.get(name, default)
    if v is not None and not isinstance(v, str):
        raise InvalidRequest(f"'{name}' must be a string.", param=name, code="invalid_value")
    return v or None


def fields(req: ImageRequest, ctx: CallContext, o: RouteOptions) -> tuple[str, dict[str, str]]:
    """(path, form fields) of one call, files aside; `seed` is added per call."""
    fmt = req.output_format or "png"
    if fmt not in FORMATS:
        raise InvalidRequest(f"'output_format' must be one of {', '.join(FORMATS)}.", param="output_format",
                             code="invalid_value")
    form: dict[str, str] = {"prompt": req.prompt, "output_format": fmt}
    negative = _text(req, "negative_prompt", o.negative_prompt)
    if negative:
        form["negative_prompt"] = negative
    if req.operation == "edit":
        search = _text(req, "search_prompt", None)
        if search is None and o.edit == "search-and-replace":
            raise InvalidRequest("This route edits by search-and-replace: send 'search_prompt' (what to replace).",
                                 param="search_prompt", code="missing_required_parameter")
        if search is not None:
            form["search_prompt"] = search
        grow = req.extra.get("grow_mask", o.grow_mask)
        if grow is not None:
            form["grow_mask"] = str(whole(grow, "grow_mask", 100))
        return EDIT + ("search-and-replace" if search is not None else "inpaint"), form
    path, model = endpoint_for(ctx.upstream_model)
    if model is not None:
        form["model"] = model
    else:
        style = _text(req, "style_preset", o.style_preset)
        if style:
            form["style_preset"] = style
    shape = requested_shape(req.size, req.extra.get("aspect_ratio"))
    form["aspect_ratio"] = nearest_ratio_of(*shape, RATIOS) if shape else "1:1"
    return path, form


def image_size(b64: str) -> str | None:
    """WxH from the image header (the first bytes only: no decode of the whole image)."""
    from PIL import Image, UnidentifiedImageError

    head = b64[:65536]
    try:
        raw = base64.b64decode(head[: len(head) // 4 * 4])
        with Image.open(io.BytesIO(raw)) as img:
            return f"{img.width}x{img.height}"
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError):
        return None


class StabilityProvider(HttpProvider, SyncProvider):
    name: ClassVar[str] = "stability"
    env_prefix: ClassVar[str] = "STABILITY"
    default_base_url: ClassVar[str] = "https://api.stability.ai"
    label: ClassVar[str] = "Stability"
    capabilities: ClassVar[Capabilities] = Capabilities(edits=True, masks=True, max_n=MAX_N, takes_aspect_ratio=True,
                                                        aspect_ratios=RATIOS)
    builtin_routes: ClassVar[Sequence[RouteSpec]] = _routes()
    Options = Options
    RouteOptions = RouteOptions

    async def generate(self, req: ImageRequest, ctx: CallContext) -> ProviderResult:
        # (variations and n > MAX_N never get here: the router checks the capabilities)
        o: RouteOptions = self.route_options(ctx)
        path, form = fields(req, ctx, o)
        files: list[tuple[str, bytes, InputImage]] = []
        if req.operation == "edit":
            if not req.images:
                raise InvalidRequest("An edit needs an 'image'.", param="image", code="missing_required_parameter")
            files.append(("image", await caller_bytes(req.images[0], ctx, "image", max_bytes=INPUT_MAX), req.images[0]))
            if req.mask is not None:
                files.append(("mask", await caller_bytes(req.mask, ctx, "mask", max_bytes=INPUT_MAX), req.mask))
        seed = whole(req.extra.get("seed"), "seed", MAX_SEED)
        seeds = [None if seed is None else (seed + i) % (MAX_SEED + 1) for i in range(req.n)]
        if seed is None and req.n > 1:  # distinct images: Stability's 0 means "random" for each call anyway
            seeds = [random.randrange(1, MAX_SEED) for _ in range(req.n)]
        answers = await fan_out([self._one(self.base_url + path, form, files, s, ctx) for s in seeds])
        images = [GeneratedImage(b64=a["image"], content_type=f"image/{form['output_format']}") for a in answers]
        meta: dict[str, Any] = {"output_format": form["output_format"], "seed": answers[0].get("seed")}
        if "aspect_ratio" in form:
            meta["aspect_ratio"] = form["aspect_ratio"]
        size = image_size(answers[0]["image"])
        if size:
            meta["size"] = size
        return ProviderResult(images, meta=meta)

    async def _one(self, url: str, form: dict[str, str], files: list[tuple[str, bytes, InputImage]],
                   seed: int | None, ctx: CallContext) -> dict[str, Any]:
        data = aiohttp.FormData(default_to_multipart=True)  # (the API takes multipart only)
        for k, v in form.items():
            data.add_field(k, v)
        if seed is not None:
            data.add_field("seed", str(seed))
        for name, raw, img in files:
            data.add_field(name, raw, filename=img.filename, content_type=img.content_type)
        a = await self.call(url, ctx, data=data, headers={"Authorization": f"Bearer {ctx.api_key}",
                                                          "Accept": "application/json"})
        body = a.json()
        if a.status >= 400:
            raise error_of(a.status, body, a.body, a.headers, [ctx.api_key])
        if not isinstance(body, dict) or not isinstance(body.get("image"), str) or not body["image"]:
            if isinstance(body, dict) and body.get("finish_reason") == "CONTENT_FILTERED":
                raise _filtered([ctx.api_key])
            raise UpstreamError("Stability answered without an image.", code="upstream_no_image")
        if body.get("finish_reason") == "CONTENT_FILTERED":
            # The image exists but Stability blurred it for its content policy: not a result to deliver.
            raise _filtered([ctx.api_key])
        return body


def _filtered(secrets: list[str | None]) -> GatewayError:
    return mapped("policy", "the generated image was filtered (finish_reason CONTENT_FILTERED)",
                  label="Stability", secrets=secrets)


def error_of(status: int, body: Any, raw: bytes, headers: Any, secrets: list[str | None]) -> GatewayError:
    """Stability's `{id, name, errors: [...]}` (or a proxy's page) → the caller's error."""
    name = body.get("name") if isinstance(body, dict) else None
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors:
        message = "; ".join(str(e) for e in errors)
    elif isinstance(body, dict) and isinstance(body.get("message"), str):
        message = body["message"]
    else:
        message = summary(status, raw)
    kind: Kind = kind_of_status(status)
    if name == "content_moderation" or (status == 403 and "moderation" in message.lower()):
        kind = "policy"
    elif status == 413:
        kind = "invalid"
    return mapped(kind, message, label="Stability", code=str(name) if name else None, headers=headers,
                  secrets=secrets)
