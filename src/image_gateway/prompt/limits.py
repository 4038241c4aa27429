"""How long a prompt may be, per route: route option `max_prompt_chars`, else the upstream's own limit.

OpenAI documents its limits in characters: 1,000 for dall-e-2, 4,000 for dall-e-3 and 32,000 for
the GPT-image models. Other providers get 32,000 too. The limit is resolved once per route when the
config is loaded; a request pays one `len()` against it (api/images.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.settings import DEFAULT_MAX_PROMPT_CHARS
from ..errors import InvalidRequest

# By upstream model prefix, for routes of the `openai` provider.
OPENAI_MAX_PROMPT_CHARS: tuple[tuple[str, int], ...] = (("dall-e-2", 1000), ("dall-e-3", 4000))


def max_prompt_chars(provider: str, upstream_model: str, options: Mapping[str, Any]) -> int:
    """The route's limit. Raises ValueError for a `max_prompt_chars` option that is not a positive integer."""
    raw = options.get("max_prompt_chars")
    if raw is not None:
        try:
            limit = int(raw) if not isinstance(raw, bool | float) else 0
        except (TypeError, ValueError):
            limit = 0
        if limit < 1:
            raise ValueError(f"max_prompt_chars must be a positive integer, got {raw!r}")
        return limit
    if provider == "openai":
        for prefix, limit in OPENAI_MAX_PROMPT_CHARS:
            if upstream_model.startswith(prefix):
                return limit
    return DEFAULT_MAX_PROMPT_CHARS


def prompt_too_long(model: str, limit: int, length: int) -> InvalidRequest:
    """OpenAI's own answer for an over-long string, naming the model whose limit it is."""
    return InvalidRequest(f"Invalid 'prompt': string too long. Expected a string with maximum length {limit} "
                          f"for the model '{model}', but got a string with length {length} instead.",
                          param="prompt", code="string_above_max_length")
