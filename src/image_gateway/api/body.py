"""Reading request bodies: size-capped, JSON or multipart, into plain values."""

from __future__ import annotations

import re
from typing import Any

import msgspec
from starlette.datastructures import UploadFile
from starlette.requests import Request

from ..core.types import InputImage
from ..errors import GatewayError, InvalidRequest


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class ClientGone(GatewayError):
    """The caller hung up while sending its body (nobody will read this answer)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"

    def __init__(self) -> None:
        super().__init__("The client closed the connection before sending its whole body.")


def header(request: Request, name: bytes) -> str | None:
    """One request header (lower-case name). The headers are made a dict once per request: cheaper
    than Starlette's Headers, which scans the list on every lookup."""
    scope = request.scope
    h = scope.get("_hdrs")
    if h is None:
        h = scope["_hdrs"] = dict(scope["headers"])
    v = h.get(name)
    return v.decode("latin-1") if v is not None else None


async def read_body(request: Request, limit: int) -> bytes:
    declared = header(request, b"content-length")
    # isascii: "²".isdigit() is true but int("²") raises; a 16+ digit length is over any limit (and int()
    # of thousands of digits raises too).
    if declared is not None and declared.isascii() and declared.isdigit() and (
            len(declared) > 15 or int(declared) > limit):
        raise PayloadTooLarge(f"Request body is larger than the gateway's limit of {limit} bytes.")
    # ASGI receive() directly: the usual small JSON body arrives in one message.
    chunks: list[bytes] = []
    total = 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(f"Request body is larger than the gateway's limit of {limit} bytes.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    request._body = body  # let request.form() reuse what we read
    return body


def decode_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise InvalidRequest("Request body is empty; expected a JSON object.", code="invalid_json")
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise InvalidRequest(f"Request body is not valid JSON: {e}", code="invalid_json") from None
    except RecursionError:  # msgspec decodes on the C stack and gives up past Python's recursion limit
        raise InvalidRequest("Request body is not valid JSON: it is nested too deeply.", code="invalid_json") \
            from None
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object.", code="invalid_json")
    return data


# Control characters (NUL, CR, LF...; tab is allowed, RFC 9110 §5.5) cannot go into a header of an
# upstream request (aiohttp refuses them as header injection): a part name, filename, part content type
# or provider key that carries one is refused where it comes in.
has_control = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]").search


def _plain(text: str, what: str, param: str) -> str:
    if has_control(text):
        raise InvalidRequest(f"The {what} of the '{param}' part contains a control character.", param=param,
                             code="invalid_multipart")
    return text


def is_multipart(request: Request) -> bool:
    return (header(request, b"content-type") or "").startswith("multipart/form-data")


async def read_form(request: Request, limit: int) -> tuple[dict[str, str], dict[str, list[InputImage]]]:
    """Form fields (strings, as the SDK sends them) and files grouped by normalised name.

    `image`, `image[]` and `image[0]`, `image[1]`... all land under "image".
    """
    await read_body(request, limit)
    try:
        form = await request.form(max_files=64, max_fields=256, max_part_size=limit)
    except Exception as e:  # python-multipart raises several types for a malformed body
        raise InvalidRequest(f"Malformed multipart body: {getattr(e, 'detail', e)}", code="invalid_multipart") \
            from None
    fields: dict[str, str] = {}
    files: dict[str, list[InputImage]] = {}
    try:
        for key, value in form.multi_items():
            name = _plain(key, "name", key).split("[", 1)[0]
            if isinstance(value, UploadFile):
                data = await value.read()
                if not data:
                    continue
                files.setdefault(name, []).append(InputImage(
                    data=data, filename=_plain(value.filename or f"{name}.png", "filename", name),
                    content_type=_plain(value.content_type or "application/octet-stream", "content type", name)))
            elif value != "":  # the SDK sends None as ""
                fields[key] = value
    finally:
        await form.close()
    return fields, files
