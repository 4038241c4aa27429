"""Delivering a finished task to the caller's `webhook_url`: POST, retried with back-off, signed.

`X-Gateway-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with WEBHOOK_SECRET>` when a
secret is set; the receiver recomputes it over the bytes it got. Retries: any network error,
408/409/425/429 and 5xx, with exponential back-off; another 4xx answer ends the delivery.
The URL is the caller's: it goes through the egress policy (media/egress.py) at connect time too,
and a refused one ends the delivery (no retries, nothing sent). Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp

from ..core.settings import Config
from ..media.egress import STRICT, EgressPolicy, EgressRefused, guarded_session, refused_by_policy

log = logging.getLogger("image_gateway.webhooks")
_RETRY_4XX = frozenset({408, 409, 425, 429})


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def valid_url(url: str) -> bool:
    """Shape only; where it may point is checked by the egress policy (api/images.py, and here)."""
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


class WebhookSender:
    # Defaults are Config's (declared once in core/settings.py).
    def __init__(self, secret: str | None = None, attempts: int = Config.webhook_attempts,
                 backoff_s: float = Config.webhook_backoff_s, timeout_s: float = 10.0,
                 policy: Callable[[], EgressPolicy] = lambda: STRICT) -> None:
        self.secret = secret
        self.policy = policy  # read per connection: a config reload's allowlist applies
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = guarded_session(self.policy, aiohttp.ClientTimeout(total=self.timeout_s))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def deliver(self, url: str, body: bytes, task_id: str, event: str) -> bool:
        """True once the receiver answered 2xx; False after the last attempt (or a final 4xx)."""
        headers = {"Content-Type": "application/json", "User-Agent": "image-gateway-webhook",
                   "X-Gateway-Task-Id": task_id, "X-Gateway-Event": event}
        if self.secret:
            headers["X-Gateway-Signature"] = sign(self.secret, body)
        host = urlsplit(url).hostname  # never log the full URL: its query may carry the receiver's token
        for attempt in range(self.attempts):
            status = None
            try:
                self.policy().screen(url)  # IP literals (names are checked by the session's resolver)
                async with self.session.post(url, data=body, headers=headers, allow_redirects=False) as r:
                    status = r.status
                    await r.read()
            except (aiohttp.ClientError, TimeoutError, EgressRefused) as e:
                refused = refused_by_policy(e)
                if refused is not None:
                    log.warning("webhook refused by the egress policy", extra={
                        "task_id": task_id, "host": host, "error": refused.reason})
                    return False
                log.info("webhook attempt failed", extra={"task_id": task_id, "host": host, "attempt": attempt + 1,
                                                          "error": type(e).__name__})
            if status is not None:
                if 200 <= status < 300:
                    return True
                log.info("webhook refused", extra={"task_id": task_id, "host": host, "attempt": attempt + 1,
                                                   "status": status})
                if 400 <= status < 500 and status not in _RETRY_4XX:
                    return False
            if attempt + 1 < self.attempts:
                await asyncio.sleep(self.backoff_s * 2 ** attempt)
        return False
