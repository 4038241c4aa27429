"""The generic route options (those the gateway reads, not an adapter), as msgspec Structs.

Every field defaults to None ("not set": the reader's own default applies, e.g. the router's
`retries`). config.py validates a route's options against these plus its provider's RouteOptions
when the configuration loads (providers/options.py), so a typo or a wrong type is a start-up
error, never a surprise at request time. The poll options and `rehost` may also be set per
provider (and per deployment); a route's own value wins.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ResponseFormat = Literal["both", "url", "b64_json", "native"]


class PollOptions(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """How the engine polls a submit-and-poll upstream (engine/poller.py PollSettings)."""

    poll_interval_s: float | None = None
    poll_max_interval_s: float | None = None
    poll_backoff_after_s: float | None = None
    poll_batch_size: int | None = None
    poll_timeout_s: float | None = None
    poll_error_limit: int | None = None


class EndpointOptions(PollOptions, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """The generic options a provider or deployment may set too (a route's own value wins)."""

    # Upstream image URLs are served from the gateway's own origin (downloaded once, hosted): a
    # client that fetches a returned URL with the caller's key (Open WebUI) never sends it to a
    # third party. None = on, for every provider; false keeps the upstream's URL (api/images.py).
    rehost: bool | None = None


class GatewayRouteOptions(EndpointOptions, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Route options read by the router (routing/policy.py), the engine and the prompt pipeline."""

    retries: int | None = None  # re-sends on this route before its fallbacks (router: retries)
    retry_on_timeout: bool | None = None  # re-send a sync call that timed out (it may have billed)
    fallback_on_client_error: bool | list[str | int] | None = None  # true, or error codes / statuses
    deadline_s: float | None = None  # the whole job's deadline (JOB_DEADLINE_S)
    max_prompt_chars: int | None = None  # longer prompts get 400 (prompt/limits.py)
    enhance: bool | None = None  # run the prompt through the LLM by default
    parse_ratio: bool | None = None  # take a ratio out of the prompt
    # The answer's form when the caller names no response_format (DEFAULT_RESPONSE_FORMAT's per route).
    default_response_format: ResponseFormat | None = None
