"""What one request sets in a ComfyUI graph: the request fields a route's `inputs` table maps, checked
and typed (comfyui.py fills them in with comfyui_wire.fill). A field the caller did not send is None,
so the workflow keeps its own value; the seed is always set (random unless given)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.types import ImageRequest
from ..errors import InvalidRequest
from .selfhosted import dimensions, float_field, int_field, seed_of, str_field

_OWN = ("image", "mask", "checkpoint")  # set by the adapter (uploads, the instance's checkpoint list)


def check(req: ImageRequest, inputs: Mapping[str, str]) -> None:
    """What a workflow cannot take, as the caller's 400."""
    if req.n > 1 and "n" not in inputs:
        raise InvalidRequest(f"The model '{req.model}' runs a workflow that makes one image per request "
                             "(its route maps no `n` input).", param="n", code="invalid_value")
    if req.operation == "edit" and "image" not in inputs:
        raise InvalidRequest(f"The model '{req.model}' runs a workflow without an image input (map `image` "
                             "to a LoadImage node's input).", param="model", code="unsupported_operation")
    if req.mask is not None and "mask" not in inputs:
        raise InvalidRequest(f"The model '{req.model}' runs a workflow without a mask input.", param="mask",
                             code="unsupported_parameter")


def values(req: ImageRequest, o: Any, inputs: Mapping[str, str]) -> dict[str, Any]:
    """Field -> value for the request (`o`: the route's ComfyUI options, which win over the graph)."""
    x = req.extra
    cfg = float_field(x.get("cfg", x.get("cfg_scale")), "cfg", 0, 100)
    out: dict[str, Any] = {
        "prompt": req.prompt, "seed": seed_of(req), "n": req.n,
        "negative_prompt": str_field(x.get("negative_prompt"), "negative_prompt") or o.negative_prompt,
        "steps": int_field(x.get("steps"), "steps", 1, 1000) or o.steps,
        "cfg": o.cfg if cfg is None else cfg,
        "sampler_name": str_field(x.get("sampler_name"), "sampler_name") or o.sampler_name,
        "scheduler": str_field(x.get("scheduler"), "scheduler") or o.scheduler,
        "denoise": float_field(x.get("denoise", x.get("denoising_strength")), "denoise", 0, 1),
    }
    size = dimensions(req, None)
    if size is not None:
        out["width"], out["height"] = size
    for field in inputs:  # anything else the route maps comes from the body's extra fields
        if field not in out and field not in _OWN and field in x:
            out[field] = x[field]
    return out


def meta_of(filled: dict[str, Any], inputs: Mapping[str, str], seed: int) -> dict[str, Any]:
    """The seed, and the size the graph makes (when the route maps width and height)."""
    def at(field: str) -> Any:
        node, _, name = inputs.get(field, ".").partition(".")
        return filled.get(node, {}).get("inputs", {}).get(name)

    meta: dict[str, Any] = {"seed": seed}
    w, h = at("width"), at("height")
    if isinstance(w, int) and isinstance(h, int):
        meta["size"] = f"{w}x{h}"
    return meta
