"""Which provider key a request uses: X-Provider-Key › configured key › the caller's bearer token."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a microsecond per request
class KeySource:
    provider_key: str | None = field(default=None, repr=False)  # X-Provider-Key header
    bearer: str | None = field(default=None, repr=False)  # only set when no gateway keys are configured

    def for_provider(self, configured: str | None) -> str | None:
        return self.provider_key or configured or self.bearer

    def secrets(self) -> list[str | None]:
        return [self.provider_key, self.bearer]
