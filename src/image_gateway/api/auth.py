"""Gateway keys and the per-request provider key (bring your own key)."""

from __future__ import annotations

import hmac

from starlette.requests import Request

from ..config import Config
from ..errors import AuthError
from ..routing.keys import KeySource
from .body import header


def bearer(request: Request) -> str | None:
    value = header(request, b"authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(request: Request, cfg: Config) -> KeySource:
    """Check the gateway key if any are configured; return where provider keys may come from."""
    token = bearer(request)
    provider_key = header(request, b"x-provider-key") or None
    if cfg.gateway_keys:
        if token is None:
            raise AuthError("Missing gateway key: send 'Authorization: Bearer <gateway key>'.")
        if not any(hmac.compare_digest(token, k) for k in cfg.gateway_keys):
            raise AuthError("Invalid gateway key.")
        return KeySource(provider_key=provider_key)
    # No gateway keys: the caller's bearer token is their own provider key.
    return KeySource(provider_key=provider_key, bearer=token)
