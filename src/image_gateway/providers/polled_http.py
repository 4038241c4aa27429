"""What the submit-then-poll HTTP adapters (bfl, replicate, fal) share beyond providers/http.py:

* `send()`: one GET / PUT / POST to a URL the upstream handed back (a polling, status or cancel URL),
  transport failures mapped as `HttpProvider.call` maps them;
* `check_url()`: such a URL may only carry the key to the configured upstream's own origin or to
  the provider's documented hosts (an answer naming any other host would send the key there);
* `detail_error()`: the error bodies these upstreams send (FastAPI's `{"detail": "..."}` or
  `{"detail": [{loc, msg, type}]}`, RFC 7807 problem+json `{title, detail, status}`) → our errors
  (providers/errmap.py's kinds): 402 as 429 `insufficient_quota`, 429 as a capacity answer with its
  Retry-After.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import aiohttp
import msgspec
from yarl import URL

from ..core.types import PollOutcome, Progress
from ..errors import GatewayError, InvalidRequest, UpstreamError, redact, scrub
from .errmap import error, summary
from .http import Answer, HttpProvider, connection_error, retry_after

_SECONDS = re.compile(r"(\d+(?:\.\d+)?)\s*(?:s\b|sec|second)", re.IGNORECASE)


async def send(provider: HttpProvider, method: str, url: str, headers: Mapping[str, str],
               json: Any = None) -> Answer:
    """One request to `url`, read whole; transport failures as gateway errors (no URL in them)."""
    data = msgspec.json.encode(json) if json is not None else None
    hdrs = {**headers, "Content-Type": "application/json"} if data is not None else dict(headers)
    try:
        async with provider.session.request(method, url, data=data, headers=hdrs, allow_redirects=False) as resp:
            return Answer(resp.status, await resp.read(), resp.headers)
    except (aiohttp.ClientError, TimeoutError) as e:
        raise connection_error(e, provider.label or provider.name) from None


@lru_cache(maxsize=64)  # (the configured base URLs: parsed once, not once per poll)
def origin(url: str) -> tuple[str, str, int | None]:
    u = URL(url)
    return (u.scheme, (u.host or "").lower(), u.explicit_port if u.explicit_port is not None else u.port)


def check_url(url: Any, base_url: str, hosts: re.Pattern[str], what: str) -> str:
    """`url` when it is on `base_url`'s origin (scheme, host, port) or an https URL whose host matches
    `hosts`; an UpstreamError otherwise (the key is never sent there)."""
    if not isinstance(url, str) or not url:
        raise UpstreamError(f"{what} is missing from the upstream's answer.", code="upstream_bad_answer")
    try:
        u = URL(url)
    except ValueError:
        raise UpstreamError(f"{what} in the upstream's answer is not a URL.", code="upstream_bad_answer") from None
    if u.user or u.password:
        raise UpstreamError(f"{what} in the upstream's answer carries credentials; refused.",
                            code="upstream_bad_answer")
    if (u.scheme, (u.host or "").lower(), u.port) == origin(base_url):
        return url
    if u.scheme == "https" and u.host and hosts.fullmatch(u.host.lower()) and u.explicit_port in (None, 443):
        return url
    raise UpstreamError(f"{what} in the upstream's answer points at another host ({u.host}); refused so that "
                        "the key is not sent there.", code="upstream_bad_answer")


def _detail_text(data: Any) -> tuple[str | None, str | None, str | None]:
    """(message, param, type) out of a FastAPI / problem+json body."""
    if not isinstance(data, dict):
        return None, None, None
    detail = data.get("detail")
    if isinstance(detail, list) and detail:
        parts, param, kind = [], None, None
        for d in detail[:5]:
            if not isinstance(d, dict):
                continue
            loc = [str(x) for x in d.get("loc") or () if x not in ("body", "input")]
            if param is None and loc:
                param = loc[-1]
            kind = kind or (d.get("type") if isinstance(d.get("type"), str) else None)
            parts.append(f"{'.'.join(loc) + ': ' if loc else ''}{d.get('msg') or d.get('message') or ''}".strip())
        return "; ".join(p for p in parts if p) or None, param, kind
    for key in ("detail", "message", "error", "title"):
        v = data.get(key)
        if isinstance(v, dict):
            v = v.get("message") or v.get("detail")
        if isinstance(v, str) and v.strip():
            return v.strip(), None, data.get("type") if isinstance(data.get("type"), str) else None
    return None, None, None


def wait_hint(headers: Mapping[str, str], data: Any, message: str) -> dict[str, str]:
    """Retry-After from the header, else a body's `retry_after`, else "available in N seconds"."""
    out = retry_after(headers)
    if out:
        return out
    ra = data.get("retry_after") if isinstance(data, dict) else None
    if isinstance(ra, int | float) and not isinstance(ra, bool) and ra >= 0:
        return {"Retry-After": str(max(1, round(ra)))}
    m = _SECONDS.search(message)
    return {"Retry-After": str(max(1, round(float(m.group(1)))))} if m else {}


def detail_error(answer: Answer, label: str, secrets: Sequence[str | None], *,
                 policy_types: tuple[str, ...] = ("content_policy_violation",)) -> GatewayError:
    """An upstream error answer (status >= 400) → the GatewayError it means, the key scrubbed."""
    status, data = answer.status, answer.json()
    message, param, kind = _detail_text(data)
    if not message:
        message = summary(status, answer.body)
    message = redact(message, secrets)
    said = f"{label} answered HTTP {status}: {message}"
    err: GatewayError
    if status in (401, 403):
        err = error("auth", f"{label} rejected the API key (HTTP {status}): {message}")
    elif status == 402:
        err = error("quota", f"{label} says the account is out of credit (HTTP 402): {message}")
    elif status == 429:
        err = error("rate", f"{label} is rate limiting this account (too many requests or active tasks): {message}",
                    retry=wait_hint(answer.headers, data, message))
    elif kind in policy_types:
        err = error("policy", f"{label} rejected the request under its content policy: {message}", param=param)
    elif status in (400, 404, 409, 413, 422):
        err = InvalidRequest(said, param=param, code="invalid_value" if status == 422 else None)
    elif status in (408, 504):
        err = UpstreamError(said, status=504, type="timeout", code="timeout", retryable=True)
    else:
        err = UpstreamError(said, code="upstream_error", retryable=status >= 500)
    return scrub(err, secrets)


def transient(exc: BaseException) -> bool:
    """Worth polling again (the engine's rule, engine/poller.py is_transient)."""
    if isinstance(exc, GatewayError):
        return exc.retryable or exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, aiohttp.ClientError | TimeoutError | OSError)


async def poll_all(handles: Sequence[dict[str, Any]], one: Callable[[dict[str, Any]], Awaitable[PollOutcome]],
                   last: Callable[[dict[str, Any]], int]) -> list[PollOutcome]:
    """`poll()` for an upstream polled one handle at a time. A handle whose task failed gets its error;
    one whose poll hit a transient error (a 5xx, a 429, a dropped connection) keeps its last progress
    and is asked again next time. When every handle of the call hit one, the call raises it, so the
    engine backs off and counts it toward `poll_error_limit`."""
    got = await asyncio.gather(*(one(h) for h in handles), return_exceptions=True)
    if got and all(isinstance(g, BaseException) and transient(g) for g in got):
        first = got[0]
        assert isinstance(first, BaseException)
        raise first
    out: list[PollOutcome] = []
    for h, g in zip(handles, got, strict=True):
        if isinstance(g, BaseException):
            if transient(g):
                out.append(Progress(last(h)))
            elif isinstance(g, GatewayError):
                out.append(g)
            else:
                raise g
        else:
            out.append(g)
    return out
