"""Every provider the gateway knows. Adding a provider: one module, one line here."""

from __future__ import annotations

from typing import Any

from . import demo, grsai, midjourney, openai, zimage

# name -> adapter class. Each class carries its env prefix, default base URL and built-in routes.
PROVIDER_CLASSES: dict[str, Any] = {
    "demo": demo.DemoProvider,
    "openai": openai.OpenAIProvider,
    "zimage": zimage.ZImageProvider,
    "grsai": grsai.GrsAiProvider,
    "midjourney": midjourney.MidjourneyProvider,
}
