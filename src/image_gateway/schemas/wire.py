"""What the gateway answers, as msgspec Structs: the components of the OpenAPI document (api/openapi.py).

The handlers build these bodies as plain dicts on the hot path (cheaper than Structs); these types
say what those dicts are, and the schemathesis test checks every answer against them. Fields a body
may lack are typed with `msgspec.UNSET` (left out of the schema's `required`); fields that are
always present but may be null are `X | None` without a default.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

TaskStatus = Literal["queued", "in_progress", "succeeded", "failed", "cancelled"]


class ErrorObject(msgspec.Struct):
    """OpenAI's error object: all four keys are always present."""

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(msgspec.Struct):
    """Every non-2xx answer of the gateway (and the `error` event of a stream)."""

    error: ErrorObject


class Image(msgspec.Struct):
    """One image: base64 (`b64_json`), a URL, or both (`both`, the default when none is asked)."""

    b64_json: str | UnsetType = UNSET
    url: str | UnsetType = UNSET
    revised_prompt: str | UnsetType | None = UNSET


class ImagesResponse(msgspec.Struct):
    created: int
    data: list[Image]
    background: str | UnsetType = UNSET
    output_format: str | UnsetType = UNSET
    quality: str | UnsetType = UNSET
    size: str | UnsetType = UNSET
    usage: dict[str, Any] | UnsetType = UNSET  # the upstream's own usage object (tokens), when it gave one


class Task(msgspec.Struct):
    """An async task (the gateway's extension): `Prefer: respond-async` or `"async": true`."""

    id: str
    object: Literal["image.task"]
    model: str
    status: TaskStatus
    progress: int
    created: int
    result: ImagesResponse | None  # once succeeded
    error: ErrorObject | None  # once failed or cancelled
    requires_key: bool | UnsetType = UNSET  # after a restart, a task started with the caller's key needs it again


class ModelCapabilities(msgspec.Struct):
    """What a route takes (the gateway's extension)."""

    generations: bool
    edits: bool
    variations: bool
    masks: bool  # edits take a mask
    chat: bool  # usable from /v1/chat/completions
    stream: bool
    partial_images: bool  # a stream shows previews before the image
    # (`async` in the body: Prefer: respond-async works on the route)
    async_: bool = msgspec.field(name="async")
    max_n: int
    sizes: list[str]  # the sizes to offer ("auto" and WxH)
    custom_sizes: bool  # whether another WxH is accepted too
    response_formats: list[str]


class Model(msgspec.Struct):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str  # the provider
    # new-api's extension: "image-generation" first (Cherry Studio takes the first as the model's
    # type), "openai" for the chat surface.
    supported_endpoint_types: list[str]
    capabilities: ModelCapabilities


class ModelList(msgspec.Struct):
    object: Literal["list"]
    data: list[Model]


class ChatMessage(msgspec.Struct):
    role: Literal["assistant"]
    content: str  # Markdown: the image(s), the prompt used, the ratio and resolution
    refusal: None = None
    images: list[dict[str, Any]] = []  # OpenRouter's [{type: "image_url", image_url: {url}, index}]: hosted URLs


class ChatChoice(msgspec.Struct):
    index: int
    message: ChatMessage
    finish_reason: str
    logprobs: None = None


class ChatUsage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(msgspec.Struct):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: ChatUsage


class Health(msgspec.Struct):
    status: str
    instance: str


class ImageStoreState(msgspec.Struct):
    kind: str  # "s3"
    ok: bool  # the bucket answered (checked at most every 10 s)


class Ready(msgspec.Struct):
    status: str
    # For the metrics or admin key only: usable providers, self-hosted ones failing their probe, the bucket.
    providers: list[str] = msgspec.field(default_factory=list)
    unreachable: list[str] = msgspec.field(default_factory=list)
    image_store: ImageStoreState | None = None  # with IMAGE_STORE=s3
    shared_state: str | None = None  # with REDIS_URL: "ok" or "unavailable"


class Reloaded(msgspec.Struct):
    status: Literal["reloaded"]
    generation: int
    config_file: str
    routes: list[str]


class Deployments(msgspec.Struct):
    generation: int
    inflight: int
    routes: dict[str, list[dict[str, Any]]]


class TaskList(msgspec.Struct):
    object: Literal["list"]
    data: list[Task]


# Events of the streams (`text/event-stream`), each sent as `event: <type>` + `data: <JSON>`.

class ImagePartialEvent(msgspec.Struct):
    type: Literal["image_generation.partial_image", "image_edit.partial_image"]
    b64_json: str
    partial_image_index: int
    progress: int | UnsetType = UNSET  # percent, when the provider reports one


class ImageCompletedEvent(msgspec.Struct):
    type: Literal["image_generation.completed", "image_edit.completed"]
    b64_json: str
    output_format: str
    background: str | UnsetType = UNSET
    quality: str | UnsetType = UNSET
    size: str | UnsetType = UNSET
    usage: dict[str, Any] | UnsetType = UNSET


class ChatChunk(msgspec.Struct):
    """One `chat.completion.chunk` of a streamed chat answer (`delta.reasoning_content` carries progress)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[dict[str, Any]]
    usage: ChatUsage | UnsetType | None = UNSET


class TaskProgressEvent(msgspec.Struct):
    type: Literal["image.task.progress"]
    task_id: str
    status: TaskStatus
    progress: int


class TaskEndEvent(msgspec.Struct):
    type: Literal["image.task.succeeded", "image.task.failed", "image.task.cancelled"]
    task: Task


RESPONSES: tuple[type[msgspec.Struct], ...] = (
    ErrorResponse, ImagesResponse, Task, TaskList, Model, ModelList, ChatCompletion, Health, Ready, Reloaded,
    Deployments, ImagePartialEvent, ImageCompletedEvent, ChatChunk, TaskProgressEvent, TaskEndEvent)
