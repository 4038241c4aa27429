"""The OpenAPI 3.1 document, built from the msgspec Structs that validate requests and describe answers.

`msgspec.json.schema_components` turns the request Structs (schemas/images.py, schemas/chat.py) and
the answer Structs (schemas/wire.py) into JSON Schema 2020-12, which OpenAPI 3.1 takes as it is;
the paths around them are written here by hand. Built once per process, served as cached bytes.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from .. import __version__
from ..schemas.chat import ChatRequest
from ..schemas.images import ImageParams
from ..schemas.wire import RESPONSES

_REF = "#/components/schemas/{name}"
JSON = "application/json"
SSE = "text/event-stream"


def ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


# Fields of the Images API body that are the gateway's own (read from the body beside ImageParams).
# Their values are read leniently (a flag may be `true` or `"true"`), so only what is checked is typed.
_EXTENSIONS: dict[str, Any] = {
    "async": {"description": "`true`: answer 202 with a task at once (same as `Prefer: respond-async`).",
              "examples": [True]},
    "webhook_url": {"anyOf": [{"type": "string"}, {"type": "null"}], "examples": ["https://example.com/hook"],
                    "description": "An http(s) URL: the finished task is POSTed there (signed when WEBHOOK_SECRET "
                                   "is set); anything else is a 400."},
    "enhance": {"description": "`true`: rewrite the prompt through the configured LLM first.", "examples": [True]},
    "seed": {"description": "Provider extra (demo, Z-Image): a fixed seed.", "examples": [42]},
}
_EXTRAS_NOTE = ("Other fields are passed to the provider as extras (e.g. Z-Image `width`, `height`, `steps`, "
                "`cfg`, `negative_prompt`; GrsAi `aspect_ratio`, `image_size`).")
_BINARY = {"type": "string", "format": "binary"}
_URL = {"type": "string", "pattern": "^(https?://[^/?#@\\s]+|data:)", "description": "An http(s) URL or a data: URL"}
# What the gateway takes as one JSON edit image: `{"image_url": URL}`, chat-style `{"image_url": {"url": URL}}`,
# or a bare URL string (as some relays send).
_IMAGE_REF = {"anyOf": [_URL, {"type": "object", "required": ["image_url"], "properties": {"image_url": {"anyOf": [
    _URL, {"type": "object", "required": ["url"], "properties": {"url": _URL}}]}}}]}


def _form_field(schema: dict[str, Any]) -> dict[str, Any]:
    """A form field is a string: never null, and an empty one counts as not sent (as the SDK sends None)."""
    branches = [b for b in schema.get("anyOf", ()) if b != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
    return {"anyOf": [*(branches or [{k: v for k, v in schema.items() if k != "default"}]), {"const": ""}],
            **(rest if branches else {})}


_NOT_BLANK = {"type": "string", "pattern": r"\S"}
# A user message with text: the chat surface's prompt (the *last* user message's text, strictly).
_USER_TEXT = {"type": "object", "required": ["role", "content"], "properties": {
    "role": {"const": "user"},
    "content": {"anyOf": [_NOT_BLANK, {"type": "array", "contains": {"anyOf": [_NOT_BLANK, {
        "type": "object", "required": ["text"],
        "properties": {"type": {"const": "text"}, "text": _NOT_BLANK, "image_url": {"type": "null"}}}]}}]}}}


def _body_schemas(components: dict[str, Any]) -> None:
    """Request bodies per endpoint: ImageParams' properties, required fields, files and extensions."""
    params = components["ImageParams"]["properties"]
    base = {"type": "object", "description": _EXTRAS_NOTE}
    gen = {**params, **_EXTENSIONS,
           "prompt": {**_NOT_BLANK, "examples": ["a red fox"], "description": "Required, not blank"},
           "model": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None, "examples": ["demo"],
                     "description": "A route name or alias from GET /v1/models (else DEFAULT_MODEL)."}}
    components["GenerationRequest"] = {**base, "title": "GenerationRequest", "properties": gen,
                                       "required": ["prompt"]}
    images = {"anyOf": [{"type": "array", "items": _IMAGE_REF, "minItems": 1, "maxItems": 16}, _IMAGE_REF]}
    components["EditJSONRequest"] = {
        **base, "title": "EditJSONRequest", "required": ["prompt", "images"],
        "properties": {**gen, "images": images, "mask": {"anyOf": [_IMAGE_REF, {"type": "null"}]}}}
    form = {k: _form_field(v) for k, v in gen.items() if k not in ("async", "enhance", "seed", "prompt")}
    components["EditFormRequest"] = {
        **base, "title": "EditFormRequest", "required": ["prompt"],
        "anyOf": [{"required": ["image"]}, {"required": ["image[]"]}],
        "properties": {**form, "prompt": gen["prompt"], "image": _BINARY,
                       "image[]": {"type": "array", "items": _BINARY, "minItems": 1, "maxItems": 16},
                       "mask": _BINARY}}
    keep = ("model", "n", "size", "response_format", "user")
    components["VariationFormRequest"] = {
        "type": "object", "title": "VariationFormRequest", "required": ["image"],
        "properties": {**{k: form[k] for k in keep}, "image": _BINARY}}
    chat = components["ChatRequest"]
    chat["description"] = ("The last user message (its text parts) is the prompt, unless `prompt` is given; "
                           "image_url parts are reference images on routes that edit.")
    chat["properties"]["messages"]["minItems"] = 1
    components["ContentPart"]["description"] = ("A text part, or an image_url part: in the last user message, an "
                                                "http(s) or data: URL (at most 16), else a 400.")
    chat["properties"]["model"]["examples"] = ["demo"]
    chat["anyOf"] = [{"required": ["prompt"], "properties": {"prompt": _NOT_BLANK}},
                     {"properties": {"messages": {"contains": _USER_TEXT}}}]


def _errors(*codes: int) -> dict[str, Any]:
    why = {400: "Invalid request (`param` names the field)", 401: "Missing or invalid key",
           403: "Forbidden (e.g. the admin API is off)", 404: "Not found (`model_not_found`, `task_not_found`...)",
           409: "Conflict (`idempotency_key_reused`, `task_not_cancellable`)", 413: "Body too large",
           429: "Rate or concurrency limit, or the upstream's (with Retry-After)",
           502: "Upstream error or unreachable", 503: "No deployment in service (with Retry-After)",
           504: "Upstream timeout"}
    out = {str(c): {"description": why[c], "content": {JSON: {"schema": ref("ErrorResponse")}}} for c in codes}
    out["default"] = {"description": "Any other error, same shape", "content": {JSON: {"schema": ref("ErrorResponse")}}}
    return out


_UPSTREAM = (400, 401, 404, 409, 413, 429, 502, 503, 504)


def _header(name: str, description: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": {"type": "string", **schema}}


_IMAGE_HEADERS = [
    _header("X-Provider-Key", "The provider key for this request (bring your own key)."),
    _header("Idempotency-Key", "A retry with the same key and body answers from the first request (at most 255 "
            "characters; not for streams)."),
    _header("Prefer", "`respond-async`: answer 202 with a task at once.", examples=["respond-async"]),
]


def _event(name: str | None, data: dict[str, Any]) -> dict[str, Any]:
    """One server-sent event as OpenAPI 3.2 reads an event stream's `schema`: `{event, data}`, the data a
    JSON text (`contentSchema`), or `[DONE]`."""
    props: dict[str, Any] = {"data": data}
    if name is not None:
        props["event"] = {"const": name}
    return {"type": "object", "required": ["data"], "properties": props}


def _json_data(name: str) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": JSON, "contentSchema": ref(name)}


_DONE = _event(None, {"const": "[DONE]"})


def _stream_doc(description: str, *events: dict[str, Any]) -> dict[str, Any]:
    return {"schema": {"description": f"Server-sent events: {description}; then `data: [DONE]`. Comments "
                                      "(`: keep-alive`, `: task <id>`, `: progress N%`) may come between them.",
                       "oneOf": [*events, _DONE]}}


def _image_events(prefix: str) -> dict[str, Any]:
    return _stream_doc(f"`{prefix}.partial_image` (ImagePartialEvent), `{prefix}.completed` (ImageCompletedEvent), "
                       "`error` (ErrorResponse)",
                       _event(f"{prefix}.partial_image", _json_data("ImagePartialEvent")),
                       _event(f"{prefix}.completed", _json_data("ImageCompletedEvent")),
                       _event("error", _json_data("ErrorResponse")))


def _images_op(summary: str, bodies: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {"post": {
        "summary": summary, "tags": ["images"], "parameters": _IMAGE_HEADERS,
        "requestBody": {"required": True, "content": bodies},
        "responses": {
            "200": {"description": "The images; with `stream: true`, the image stream",
                    "content": {JSON: {"schema": ref("ImagesResponse")}, SSE: _image_events(prefix)}},
            "202": {"description": "Accepted as an async task (Prefer: respond-async, or `async: true`)",
                    "content": {JSON: {"schema": ref("Task")}}},
            **_errors(*_UPSTREAM)}}}


def _get(summary: str, tag: str, schema: str | dict[str, Any], *codes: int, media: str = JSON,
         **extra: Any) -> dict[str, Any]:
    content = {media: {"schema": ref(schema) if isinstance(schema, str) else schema}}
    return {"summary": summary, "tags": [tag], "responses": {"200": {"description": "OK", "content": content},
                                                              **_errors(*codes)}, **extra}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string", "minLength": 1}}


def _paths() -> dict[str, Any]:
    task_id = [_path_param("task_id", "The task's id (from the 202 answer, or a stream's `: task <id>` comment)")]
    admin: list[dict[str, list[str]]] = [{"adminKey": []}]
    html = {"type": "string"}
    return {
        "/v1/images/generations": _images_op("Create images from a prompt", {JSON: {"schema": ref(
            "GenerationRequest")}}, "image_generation"),
        "/v1/images/edits": _images_op("Edit images (multipart files, or JSON image URLs)", {
            "multipart/form-data": {"schema": ref("EditFormRequest")},
            JSON: {"schema": ref("EditJSONRequest")}}, "image_edit"),
        "/v1/images/variations": _images_op("Variations of an image", {
            "multipart/form-data": {"schema": ref("VariationFormRequest")}}, "image_generation"),
        "/v1/chat/completions": {"post": {
            "summary": "Any image route from a chat client: the last user message is the prompt",
            "tags": ["chat"], "parameters": _IMAGE_HEADERS[:1],
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("ChatRequest")}}},
            "responses": {"200": {"description": "A Markdown answer with the image(s); with `stream: true`, chunks",
                                  "content": {JSON: {"schema": ref("ChatCompletion")},
                                              SSE: _stream_doc("`chat.completion.chunk` objects (ChatChunk), or "
                                                               "an ErrorResponse", _event(None, {
                                                                   **_json_data("ChatChunk"), "contentSchema": {
                                                                       "anyOf": [ref("ChatChunk"),
                                                                                 ref("ErrorResponse")]}}))}},
                          **_errors(*_UPSTREAM)}}},
        "/v1/images/tasks/{task_id}": {
            "parameters": task_id,
            "get": _get("An async task (extension)", "tasks", "Task", 401, 404),
            "delete": _get("Cancel a task, upstream too where the provider can", "tasks", "Task", 401, 404, 409)},
        "/v1/images/tasks/{task_id}/events": {
            "parameters": task_id,
            "get": _get("A task's progress as server-sent events", "tasks", _stream_doc(
                "`image.task.progress` (TaskProgressEvent), then `image.task.<status>` (TaskEndEvent)",
                _event("image.task.progress", _json_data("TaskProgressEvent")),
                *(_event(f"image.task.{s}", _json_data("TaskEndEvent")) for s in ("succeeded", "failed", "cancelled")),
            )["schema"], 401, 404, media=SSE)},
        "/v1/models": {"get": _get("The logical routes", "models", "ModelList", 401)},
        "/v1/models/{model}": {"parameters": [_path_param("model", "A route name or alias")],
                               "get": _get("One route", "models", "Model", 401, 404)},
        "/health": {"get": _get("Liveness", "operations", "Health", security=[])},
        "/ready": {"get": {**_get("Readiness: 200 while a provider is usable (and, with IMAGE_STORE=s3, the bucket "
                                  "answers)", "operations", "Ready", security=[]),
                           "responses": {"200": {"description": "Ready", "content": {JSON: {"schema": ref("Ready")}}},
                                         "503": {"description": "No usable provider, or the bucket is down",
                                                 "content": {JSON: {"schema": ref("Ready")}}}}}},
        "/images/{name}": {"parameters": [_path_param("name", "A hosted image's file name")],
                           "get": _get("An image the gateway hosts", "images", {"type": "string", "format": "binary"},
                                       404, 502, 503, media="image/*", security=[])},
        "/metrics": {"get": _get("Prometheus metrics", "operations", {"type": "string"}, media="text/plain",
                                 security=[])},
        "/admin/reload": {"post": {**_get("Re-read the YAML file and .env", "admin", "Reloaded", 400, 401, 403,
                                          security=admin)}},
        "/admin/deployments": {"get": _get("Every deployment's breaker state and load", "admin", "Deployments", 401,
                                           403, security=admin)},
        "/admin/tasks": {"get": _get("Recent tasks, newest first", "admin", "TaskList", 400, 401, 403, security=admin,
                                     parameters=[
                                         {"name": "status", "in": "query", "required": False,
                                          "schema": {"enum": ["queued", "in_progress", "succeeded", "failed",
                                                              "cancelled"]}},
                                         {"name": "limit", "in": "query", "required": False,
                                          "schema": {"type": "integer", "minimum": 1, "maximum": 1000,
                                                     "default": 50}}])},
        "/openapi.json": {"get": _get("This document", "operations", {"type": "object"}, security=[])},
        "/docs": {"get": _get("Interactive API docs (Swagger UI)", "operations", html, media="text/html",
                              security=[])},
        "/": {"get": _get("The playground page", "operations", html, media="text/html", security=[])},
    }


def build() -> dict[str, Any]:
    _, components = msgspec.json.schema_components((ImageParams, ChatRequest, *RESPONSES), ref_template=_REF)
    _body_schemas(components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Image AIGC Gateway", "version": __version__,
                 "description": "One OpenAI-compatible endpoint in front of many image-generation providers. "
                                "Every error is `{\"error\": {message, type, param, code}}`. Async tasks "
                                "(`/v1/images/tasks`) are the gateway's extension.",
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "tags": [{"name": n} for n in ("images", "chat", "tasks", "models", "admin", "operations")],
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "gatewayKey": {"type": "http", "scheme": "bearer",
                               "description": "A gateway key (GATEWAY_API_KEYS); without gateway keys, your own "
                                              "provider key"},
                "adminKey": {"type": "http", "scheme": "bearer", "description": "ADMIN_API_KEY"}}},
        # Optional: a gateway without GATEWAY_API_KEYS takes calls without a key.
        "security": [{}, {"gatewayKey": []}],
    }


@functools.cache
def document_bytes() -> bytes:
    return msgspec.json.encode(build())
