"""Gateway keys and the per-request provider key (bring your own key)."""

from __future__ import annotations

import functools
import hmac

from starlette.requests import Request

from ..core.settings import Config
from ..errors import AuthError
from ..routing.keys import KeySource
from .body import has_control, header


def bearer(request: Request) -> str | None:
    value = header(request, b"authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


@functools.lru_cache(maxsize=8)  # one entry per config generation's key set
def _key_bytes(keys: frozenset[str]) -> tuple[bytes, ...]:
    return tuple(k.encode("utf-8") for k in keys)


def token_bytes(token: str) -> bytes:
    """The token as it came on the wire (headers are decoded as latin-1, so this never raises)."""
    return token.encode("latin-1")


def same_secret(token: str, key: str) -> bool:
    """Constant-time compare as bytes: hmac.compare_digest raises TypeError on non-ASCII str."""
    return hmac.compare_digest(token_bytes(token), key.encode("utf-8"))


def _sendable(key: str | None, where: str) -> str | None:
    """A provider key goes into an upstream header: one with a control character could not be sent."""
    if key is not None and has_control(key):
        raise AuthError(f"The provider key in {where} contains a control character.")
    return key


def authenticate(request: Request, cfg: Config) -> KeySource:
    """Check the gateway key if any are configured; return where provider keys may come from."""
    token = bearer(request)
    provider_key = _sendable(header(request, b"x-provider-key") or None, "X-Provider-Key")
    if cfg.gateway_keys:
        if token is None:
            raise AuthError("Missing gateway key: send 'Authorization: Bearer <gateway key>'.")
        raw = token_bytes(token)
        if not any(hmac.compare_digest(raw, k) for k in _key_bytes(cfg.gateway_keys)):
            raise AuthError("Invalid gateway key.")
        return KeySource(provider_key=provider_key)
    # No gateway keys: the caller's bearer token is their own provider key.
    return KeySource(provider_key=provider_key, bearer=_sendable(token, "the Authorization header"))
