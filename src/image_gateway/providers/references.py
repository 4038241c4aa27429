"""A caller's reference image (an edit's input, a mask) in the form an upstream takes: its bytes, or
a URL the upstream fetches itself (the caller's http(s) URL as given, or a data URL of the bytes).

Bytes behind a caller's URL are fetched under the egress policy that admitted the request
(media/fetch.py `fetch_caller_image`), never through an upstream's session: the upstream's session
carries its key and would follow the caller's URL wherever it leads.
"""

from __future__ import annotations

import base64

from ..core.types import CallContext, InputImage
from ..errors import InvalidRequest, UpstreamError
from ..media.egress import STRICT
from ..media.fetch import fetch_caller_image

DOWNLOAD_MAX = 50 << 20
DOWNLOAD_TIMEOUT_S = 60.0


def data_url(data: bytes, content_type: str) -> str:
    return f"data:{content_type or 'image/png'};base64,{base64.b64encode(data).decode()}"


def url_or_data_url(img: InputImage, content_type: str | None = None) -> str:
    """The caller's URL (http(s) or data:) as given, else a data URL of the bytes (typed
    `content_type`, by default the part's own)."""
    if img.data is None:
        return img.url or ""
    return data_url(img.data, content_type or img.content_type)


async def caller_bytes(img: InputImage, ctx: CallContext, param: str, what: str | None = None,
                       max_bytes: int = DOWNLOAD_MAX, *, policy_param: str | None = None) -> bytes:
    """The image's bytes: multipart bytes as sent, a data URL decoded, or the caller's URL fetched.
    A URL that cannot be downloaded is the caller's 400 (`invalid_image_url`, naming `what`, by
    default `param`), not the upstream's 502; one the egress policy refuses is a 400 naming
    `policy_param` (by default `param`)."""
    if img.data is not None:
        return img.data
    if not img.url:
        raise InvalidRequest(f"'{param}' is empty.", param=param)
    try:
        return await fetch_caller_image(img.url, policy_param or param, ctx.egress or STRICT, max_bytes,
                                        DOWNLOAD_TIMEOUT_S)
    except UpstreamError as e:
        raise InvalidRequest(f"Could not download {what or repr(param)}: {e.message}.", param=param,
                             code="invalid_image_url") from None
