"""Raw HTTP: whatever a client sends, the answer is OpenAI-shaped with the right status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.waits import wait_until


@pytest.fixture
def gw(gateway: GatewayFactory) -> GatewayProcess:
    return gateway({"MAX_BODY_BYTES": "20000", "CORS_ORIGINS": "https://app.example.test"})


def _assert_openai_error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        (b"{not json", 400, "invalid_json", None),
        (b"", 400, "invalid_json", None),
        (b"[1,2]", 400, "invalid_json", None),
        (b'{"model":"demo"}', 400, "missing_required_parameter", "prompt"),
        (b'{"model":"demo","prompt":"   "}', 400, "missing_required_parameter", "prompt"),
        (b'{"model":"demo","prompt":"x","n":0}', 400, "invalid_value", "n"),
        (b'{"model":"demo","prompt":"x","n":"two"}', 400, "invalid_value", "n"),
        (b'{"model":"demo","prompt":"x","size":"big"}', 400, "invalid_value", "size"),
        (b'{"model":"demo","prompt":"x","response_format":"gif"}', 400, "invalid_value", "response_format"),
        (b'{"model":"demo","prompt":"x","output_compression":101}', 400, "invalid_value", "output_compression"),
        (b'{"model":"demo","prompt":"x","quality":"ultra"}', 400, "invalid_value", "quality"),
        (b'{"model":123,"prompt":"x"}', 400, None, "model"),
        (b'{"model":"nope","prompt":"x"}', 404, "model_not_found", "model"),
    ],
)
def test_bad_generation_bodies(gw: GatewayProcess, body: bytes, status: int, code: str | None,
                               param: str | None) -> None:
    r = httpx.post(gw.base_url + "/images/generations", content=body, headers={"content-type": "application/json"})
    _assert_openai_error(r, status, code, param)


def test_wrong_method_unknown_path_and_oversized(gw: GatewayProcess) -> None:
    _assert_openai_error(httpx.get(gw.base_url + "/images/generations"), 405, "method_not_allowed")
    _assert_openai_error(httpx.get(gw.base_url + "/nothing/here"), 404, "not_found")
    big = b'{"model":"demo","prompt":"' + b"x" * 30000 + b'"}'
    _assert_openai_error(httpx.post(gw.base_url + "/images/generations", content=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 1000

    # No Content-Length (chunked): the limit still holds while reading.
    r = httpx.post(gw.base_url + "/images/generations", content=chunks(), headers={"content-type": "application/json"})
    _assert_openai_error(r, 413, "payload_too_large")
    files = {"image": ("a.png", b"\x89PNG" + b"0" * 30000, "image/png")}
    _assert_openai_error(httpx.post(gw.base_url + "/images/edits", files=files, data={"prompt": "x"}), 413)


def test_bad_edits_and_variations(gw: GatewayProcess) -> None:
    r = httpx.post(gw.base_url + "/images/edits", data={"prompt": "x", "model": "demo"},
                   files={"other": ("a.txt", b"hi", "text/plain")})
    _assert_openai_error(r, 400, "missing_required_parameter", "image")
    r = httpx.post(gw.base_url + "/images/edits", content=b"--xx\r\nbroken",
                   headers={"content-type": "multipart/form-data; boundary=xx"})
    assert r.status_code == 400, r.text
    _assert_openai_error(r, 400)
    r = httpx.post(gw.base_url + "/images/edits", json={"model": "demo", "prompt": "x", "images": [{"file_id": "f"}]})
    _assert_openai_error(r, 400, None, "images")
    r = httpx.post(gw.base_url + "/images/edits", json={"model": "demo", "prompt": "x", "images": [{"image_url": 5}]})
    _assert_openai_error(r, 400, None, "images")
    r = httpx.post(gw.base_url + "/images/variations", json={"model": "demo"})
    _assert_openai_error(r, 400, None, "image")
    r = httpx.post(gw.base_url + "/images/edits", data={"prompt": "x", "model": "demo", "n": "lots"},
                   files={"image": ("a.png", b"\x89PNG....", "image/png")})
    _assert_openai_error(r, 400, "invalid_value", "n")


def test_demo_edit_and_variation_work(gw: GatewayProcess) -> None:
    png = httpx.post(gw.base_url + "/images/generations", json={"model": "demo", "prompt": "x", "size": "32x32"})
    import base64

    raw = base64.b64decode(png.json()["data"][0]["b64_json"])
    r = httpx.post(gw.base_url + "/images/edits", data={"prompt": "hat", "model": "demo", "size": "32x32"},
                   files=[("image[]", ("a.png", raw, "image/png")), ("image[]", ("b.png", raw, "image/png"))])
    assert r.status_code == 200 and len(r.json()["data"]) == 1
    r = httpx.post(gw.base_url + "/images/variations", data={"model": "demo", "n": "2", "size": "32x32"},
                   files={"image": ("a.png", raw, "image/png")})
    assert r.status_code == 200 and len(r.json()["data"]) == 2


def test_cors_preflight_without_auth_and_request_ids(gateway: GatewayFactory) -> None:
    gw = gateway({"GATEWAY_API_KEYS": "gw-cors-key-123456", "CORS_ORIGINS": "https://app.example.test"})
    pre = httpx.options(gw.base_url + "/images/generations", headers={
        "Origin": "https://app.example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert pre.status_code == 200
    assert pre.headers["access-control-allow-origin"] == "https://app.example.test"
    other = httpx.options(gw.base_url + "/images/generations", headers={
        "Origin": "https://evil.example.test", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers
    r = httpx.get(gw.base_url + "/models", headers={"X-Request-ID": "abc-123"})
    assert r.status_code == 401 and r.headers["x-request-id"] == "abc-123"
    r2 = httpx.get(gw.url + "/health")
    assert len(r2.headers["x-request-id"]) >= 16


def test_one_json_access_log_line_per_request(gw: GatewayProcess) -> None:
    for i in range(3):
        httpx.get(gw.url + "/health", headers={"X-Request-ID": f"log-test-{i}"})
    httpx.post(gw.base_url + "/images/generations", json={"model": "demo", "prompt": "x", "size": "16x16"},
               headers={"X-Request-ID": "log-test-gen"})

    def access_lines() -> list[dict[str, Any]]:  # written off the loop: they land just after the answers
        return [ln for ln in gw.log_lines() if ln.get("logger") == "image_gateway.access"
                and str(ln.get("request_id", "")).startswith("log-test")]

    wait_until(lambda: len(access_lines()) == 4, what="four access log lines")
    access = access_lines()
    assert sorted(a["request_id"] for a in access) == ["log-test-0", "log-test-1", "log-test-2", "log-test-gen"]
    gen = next(a for a in access if a["request_id"] == "log-test-gen")
    assert gen["status"] == 200 and gen["route"] == "demo" and gen["provider"] == "demo" and gen["ms"] >= 0


@pytest.mark.parametrize(("allow", "scheme"), [(None, "http"), ("127.0.0.1", "https")])
def test_forwarded_headers_only_from_named_proxies(gateway: GatewayFactory, allow: str | None, scheme: str) -> None:
    """X-Forwarded-Proto shapes hosted-image URLs only when FORWARDED_ALLOW_IPS names the proxy."""
    gw = gateway({"FORWARDED_ALLOW_IPS": allow} if allow else {})
    r = httpx.post(gw.base_url + "/images/generations", headers={"X-Forwarded-Proto": "https"},
                   json={"model": "demo", "prompt": "x", "size": "16x16", "response_format": "url"})
    assert r.status_code == 200, r.text
    assert r.json()["data"][0]["url"].startswith(f"{scheme}://127.0.0.1:")
