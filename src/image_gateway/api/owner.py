"""Who a caller is, for owning tasks and idempotent answers (the fingerprint: engine/owners.py).

With gateway keys, a caller is the gateway key it presented; without them, the provider key it
brought (`X-Provider-Key`, else its bearer token), which is also what its tasks run with. A caller
that presented neither is "anonymous": one caller for everyone alike. Only the admin key reads
tasks it does not own.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from ..core.settings import Config
from ..runtime import Runtime
from .auth import bearer
from .body import header


def credential(request: Request, cfg: Config) -> str:
    """The caller's identifying credential (call after `authenticate`, which checked it)."""
    if cfg.gateway_keys:
        return bearer(request) or ""
    return header(request, b"x-provider-key") or bearer(request) or ""


def fingerprint(request: Request, rt: Runtime) -> str:
    return rt.engine.owners.of(credential(request, rt.cfg))


def is_admin(request: Request, cfg: Config) -> bool:
    token = bearer(request)
    return bool(cfg.admin_key and token and hmac.compare_digest(token, cfg.admin_key))
