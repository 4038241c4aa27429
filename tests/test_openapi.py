"""The OpenAPI document: valid OpenAPI 3.1, and the gateway keeps to it (schemathesis, in-process).

The schemathesis run is bounded (few examples per operation, derandomized) and drives the real ASGI
app in-process on the zero-key configuration: `demo` generates, every other provider answers 401 for
want of a key (their base URLs point at a closed local port, so nothing leaves the machine).
"""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import msgspec
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.core.failures import Failure
from schemathesis.specs.openapi.checks import negative_data_rejection

from image_gateway.app import build_app
from image_gateway.config import load_config
from image_gateway.errors import InvalidRequest
from image_gateway.schemas.chat import last_user_message, parse_chat, split_content

_DATA = Path(tempfile.mkdtemp(prefix="openapi-test-"))
atexit.register(shutil.rmtree, _DATA, True)
_CLOSED = "http://127.0.0.1:9"  # discard port: refused, never answered
ADMIN_KEY = "adm-openapi-test-0123456789"
ENV = {"DATA_DIR": str(_DATA), "ACCESS_LOG": "false", "ADMIN_API_KEY": ADMIN_KEY, "CONFIG_WATCH": "0",
       "WEBHOOK_ATTEMPTS": "1", "OPENAI_BASE_URL": _CLOSED + "/v1", "MJ_BASE_URL": _CLOSED,
       "GRSAI_BASE_URL": _CLOSED, "SD_BASE_URL": _CLOSED,
       "PRIVATE_URL_ALLOWLIST": "127.0.0.1"}  # generated webhook URLs are pointed at the closed local port
APP = build_app(load_config(ENV, env_file=None))
# POST /admin/reload re-reads the process environment, not this test's ENV: left out of the run.
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path="/admin/reload")


async def _get(path: str) -> httpx.Response:
    app = build_app(load_config(ENV, env_file=None))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://gw") as c:
        return await c.get(path)


async def test_document_is_valid_openapi_31() -> None:
    r = await _get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    validate(doc)  # openapi-spec-validator, OpenAPI 3.1 rules and JSON Schema 2020-12
    assert doc["openapi"] == "3.1.0"
    paths = doc["paths"]
    for path in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations", "/v1/chat/completions",
                 "/v1/images/tasks/{task_id}", "/v1/images/tasks/{task_id}/events", "/v1/models",
                 "/v1/models/{model}", "/health", "/ready", "/images/{name}", "/metrics", "/admin/reload",
                 "/admin/deployments", "/admin/tasks"):
        assert path in paths, path
    gen = paths["/v1/images/generations"]["post"]
    assert set(gen["responses"]) >= {"200", "202", "400", "401", "404", "default"}
    assert set(gen["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert gen["responses"]["202"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Task"}
    comp = doc["components"]["schemas"]
    # The request components are the msgspec Structs that validate requests.
    from image_gateway.schemas.images import ImageParams
    assert set(ImageParams.__struct_fields__) <= set(comp["GenerationRequest"]["properties"])
    assert comp["ImageParams"]["properties"]["n"] == {"type": "integer", "minimum": 1, "maximum": 10, "default": 1}
    assert comp["ErrorObject"]["required"] == ["message", "type", "param", "code"]
    assert comp["Task"]["properties"]["status"]["enum"] == ["cancelled", "failed", "in_progress", "queued",
                                                            "succeeded"]


async def test_docs_page_serves_vendored_swagger_ui() -> None:
    page = await _get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "https://" not in page.text and "/web/swagger-ui/swagger-ui-bundle.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    js = await _get("/web/swagger-ui/swagger-ui-bundle.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert len(js.content) > 500_000 and b"SwaggerUIBundle" in js.content
    init = await _get("/web/docs.js")
    assert b'url: "/openapi.json"' in init.content and b"validatorUrl: null" in init.content
    for bad in ("/web/../app.py", "/web/swagger-ui/package.json", "/web/%2e%2e/config.py"):
        r = await _get(bad)
        assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}, bad


class _Error(msgspec.Struct):
    message: str
    type: str
    param: str | None
    code: str | None


class _ErrorBody(msgspec.Struct, forbid_unknown_fields=True):
    error: _Error


@schemathesis.check
def openai_shaped_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every 4xx/5xx answer is exactly {"error": {message, type, param, code}}; no answer holds the key."""
    if ADMIN_KEY.encode() in response.content:
        raise Failure(operation=case.operation.label, title="Key in a response", message="the admin key")
    if response.status_code < 400:
        return None
    try:
        msgspec.json.decode(response.content, type=_ErrorBody)
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise Failure(operation=case.operation.label, title="Error not OpenAI-shaped",
                      message=f"{response.status_code}: {e}: {response.content[:300]!r}") from None
    return None


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


@schema.hook
def map_case(ctx: Any, case: Any) -> Any:
    if isinstance(case.body, dict):
        # A generated webhook URL would be POSTed to: point it at the closed local port instead.
        if isinstance(case.body.get("webhook_url"), str):
            case.body["webhook_url"] = _CLOSED + "/hook"
        # JSON Schema counts 2.0 as an integer; the gateway's validator (msgspec, strict) takes only 2, as
        # every JSON encoder writes it.
        if case.meta is not None and case.meta.generation.mode.is_positive:
            case.body = _ints(case.body)
            # A generated http(s) image URL may name an internal address ("http://0"): the egress policy's
            # 400 for those is tested in test_egress.py; here they point at the closed local port instead.
            case.body = _public_urls(case.body)
        _small(case.body)
    return case


def _public_urls(value: Any) -> Any:
    if isinstance(value, str) and re.match(r"https?://", value):
        return _CLOSED + "/image.png"
    if isinstance(value, dict):
        return {k: v if k == "webhook_url" else _public_urls(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_public_urls(v) for v in value]
    return value


def _small(body: dict[str, Any]) -> None:
    """Valid `n` and `size` made small, still valid: the run is about shapes, and ten demo images of
    2048x2048 each would make it minutes long. (Invalid values are left as they are.)"""
    n, size = body.get("n"), body.get("size")
    if isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= 10:
        body["n"] = min(n, 2)
    if size is None or (isinstance(size, str) and re.fullmatch(r"\d{1,5}x\d{1,5}", size)):
        body["size"] = "24x16"  # (absent or null: the demo's default would be 1024x1024)


@schema.hook
def filter_case(ctx: Any, case: Any) -> bool:
    """The rules the document can only say in words: a chat request's prompt is its *last* user message
    (or `prompt`), and that message's image URLs must be http(s) or data: URLs. Schema-valid chat bodies
    that break only those rules are left out (the gateway's 400s for them are tested in test_chat.py)."""
    if case.operation.path != "/v1/chat/completions" or not case.meta.generation.mode.is_positive:
        return True
    try:
        chat = parse_chat(case.body)
    except InvalidRequest:
        return True
    msg = last_user_message(chat)
    text, urls = split_content(msg) if msg is not None else ("", [])
    if not ((chat.prompt or "").strip() or text):
        return False
    return len(urls) <= 16 and all(u.startswith(("http://", "https://", "data:")) for u in urls)


@schema.auth().apply_to(path_regex="^/admin/")
class AdminKey:
    def get(self, case: Any, ctx: Any) -> str:
        return ADMIN_KEY

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module")
def key_written_nowhere() -> Iterator[None]:
    """After the run (in whichever worker ran it): the admin key is in no file the gateway wrote."""
    yield
    assert any(_DATA.rglob("*.sqlite3"))  # the stores are there
    assert not [p for p in _DATA.rglob("*") if p.is_file() and ADMIN_KEY.encode() in p.read_bytes()]


@schema.parametrize()
@hypothesis.settings(max_examples=8, derandomize=True, deadline=None, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_gateway_keeps_to_its_document(case: Any, key_written_nowhere: None) -> None:
    # Multipart: schemathesis 4.32 marks form cases negative whose every part, as sent, is valid (its
    # negative values become valid strings once serialized as form fields; seen in the coverage and the
    # fuzzing phases). The gateway is right to take those, so that one check is left out for multipart
    # bodies; every other check runs on them, and negative JSON bodies are still checked.
    multipart = case.media_type == "multipart/form-data"
    if isinstance(case.body, dict) and case.meta is not None and case.meta.generation.mode.is_positive:
        case.body = _public_urls(case.body)  # (also for the example and coverage phases, which skip map_case)
    case.call_and_validate(timeout=30, excluded_checks=[negative_data_rejection] if multipart else None)

