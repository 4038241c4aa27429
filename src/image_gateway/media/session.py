"""The one way the gateway makes an aiohttp client session."""

from __future__ import annotations

from typing import Any

import aiohttp


def new_session(timeout: aiohttp.ClientTimeout, connector: aiohttp.BaseConnector | None = None,
                **kwargs: Any) -> aiohttp.ClientSession:
    """A client session without a cookie jar: upstreams authenticate with keys, caller URLs are
    fetched for many callers, and a jar filters cookies on every request and stores what any
    server sets (state shared between callers that we do not want)."""
    return aiohttp.ClientSession(connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar(), **kwargs)
