"""Every provider the gateway knows. Adding a built-in provider: one module, one line here.

A provider outside the package is loaded by configuration (`providers: {<name>: {class:
"module.path:ClassName", ...options}}`, docs/providers.md): `load_class` imports it.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from ..errors import ConfigError
from . import (
    a1111,
    ark,
    azure,
    bfl,
    comfyui,
    dashscope,
    demo,
    fal,
    google,
    grsai,
    midjourney,
    openai,
    openrouter,
    replicate,
    stability,
    zimage,
)
from .base import PollingProvider, ProviderBase, StreamingProvider, SyncProvider

# name -> adapter class. Each class carries its env prefix, default base URL, capabilities and routes.
PROVIDER_CLASSES: dict[str, type[ProviderBase]] = {
    "demo": demo.DemoProvider,
    "openai": openai.OpenAIProvider,
    "zimage": zimage.ZImageProvider,
    "grsai": grsai.GrsAiProvider,
    "midjourney": midjourney.MidjourneyProvider,
    "google": google.GoogleProvider,
    "openrouter": openrouter.OpenRouterProvider,
    "azure": azure.AzureOpenAIProvider,
    "stability": stability.StabilityProvider,
    "ark": ark.ArkProvider,
    "dashscope": dashscope.DashScopeProvider,
    "bfl": bfl.BflProvider,
    "replicate": replicate.ReplicateProvider,
    "fal": fal.FalProvider,
    "a1111": a1111.A1111Provider,
    "comfyui": comfyui.ComfyUIProvider,
}
_MODES = (SyncProvider, StreamingProvider, PollingProvider)


def load_class(name: str, spec: object, where: str = "") -> type[ProviderBase]:
    """The class a `class: "module.path:ClassName"` entry names; a ConfigError saying why not."""
    at = f"{where}: providers.{name}.class" if where else f"providers.{name}.class"
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise ConfigError(f"{at} must be \"module.path:ClassName\", got {spec!r}")
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # (an ImportError, or whatever the module raised while importing)
        raise ConfigError(f"{at}: cannot import module {module_name!r} ({type(e).__name__}: {e}); "
                          "is it on PYTHONPATH?") from None
    cls = getattr(module, attr, None)  # (a name from the configuration, not contract discovery)
    if not (isinstance(cls, type) and issubclass(cls, ProviderBase) and issubclass(cls, _MODES)):
        raise ConfigError(f"{at}: {spec!r} is not a provider class (subclass SyncProvider, StreamingProvider "
                          "or PollingProvider from image_gateway.providers.base)")
    for field in ("name", "env_prefix", "default_base_url"):
        if not isinstance(getattr(cls, field, None), str):
            raise ConfigError(f"{at}: {spec!r} must set the class attribute {field!r} (a string)")
    return cls


def provider_classes(providers_doc: Mapping[str, Any], where: str = "") -> dict[str, type[ProviderBase]]:
    """The built-in classes, plus (or overridden by) those YAML names with `class:`."""
    out = dict(PROVIDER_CLASSES)
    for name, block in providers_doc.items():
        if isinstance(block, dict) and "class" in block:
            out[str(name)] = load_class(str(name), block["class"], where)
    return out
