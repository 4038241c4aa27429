"""Inputs that used to get a 500 (issue 12, item 4, and what tests/test_fuzz.py found): each is a clear
4xx now, in OpenAI's error shape, and nothing reaches the upstream. One test per cause."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.inprocess import InProcessGateway
from tests.upstreams import fake_grsai, fake_mj, fake_openai, fake_sd
from tests.upstreams.base import FakeServer

GW_KEY = "gw-bad-input-0123456789"
UTF8_KEY = "gw-clé-ünïcode-0123456789"  # a gateway key need not be ASCII
ADMIN_KEY = "adm-bad-input-0123456789"
UPSTREAM_KEYS = {"OPENAI_API_KEY": "sk-bad-openai-0123456789", "SD_API_KEY": "sk-bad-zimage-0123456789",
                 "MJ_API_KEY": "mj-bad-proxy-0123456789", "GRSAI_API_KEY": "sk-bad-grsai-0123456789"}
SECRETS = [GW_KEY, UTF8_KEY, ADMIN_KEY, *UPSTREAM_KEYS.values()]
AUTH = {"authorization": f"Bearer {GW_KEY}"}
CONFIG = "router: {retries: 0}\nproviders:\n  midjourney: {poll_interval_s: 0.02}\n"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, FakeServer]]:
    servers = {"openai": fake_openai.start(), "sd": fake_sd.start(), "mj": fake_mj.start(step_s=0.01),
               "grsai": fake_grsai.start(step_s=0.01)}
    yield servers
    for s in servers.values():
        s.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, FakeServer]) -> Iterator[InProcessGateway]:
    env = {"OPENAI_BASE_URL": upstreams["openai"].url + "/v1", "SD_BASE_URL": upstreams["sd"].url,
           "MJ_BASE_URL": upstreams["mj"].url, "GRSAI_BASE_URL": upstreams["grsai"].url, **UPSTREAM_KEYS,
           "GATEWAY_API_KEYS": GW_KEY, "ADMIN_API_KEY": ADMIN_KEY,
           "PRIVATE_URL_ALLOWLIST": "127.0.0.1"}  # the unreachable reference image is on loopback
    g = InProcessGateway(tmp_path_factory.mktemp("bad-input"), env, CONFIG).start()
    yield g
    g.stop()
    g.assert_secret_absent(*SECRETS)


def upstream_calls(upstreams: dict[str, FakeServer]) -> int:
    return sum(len(s.state.requests) for s in upstreams.values())


def error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    err: dict[str, Any] = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"], err
    assert err["param"] == param, err
    return err


def post_json(gw: InProcessGateway, path: str, body: bytes, **headers: str) -> httpx.Response:
    return gw.request("POST", path, content=body, headers={**AUTH, "content-type": "application/json", **headers})


# -- JSON nested ~1,000 deep (msgspec's RecursionError) -----------------------------------------------

@pytest.mark.parametrize("path", ["/v1/images/generations", "/v1/images/edits", "/v1/chat/completions"])
@pytest.mark.parametrize("nested", [b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000,
                                    b"[" * 100_000 + b"]" * 100_000])
def test_deeply_nested_json_is_a_400(gw: InProcessGateway, upstreams: dict[str, FakeServer], path: str,
                                     nested: bytes) -> None:
    before = upstream_calls(upstreams)
    for body in (b'{"model": "gpt-image-1", "prompt": "a fox", "extra": ' + nested + b"}", nested):
        err = error(post_json(gw, path, body), 400)
        assert err["code"] == "invalid_json" and "nested too deeply" in err["message"]
    assert upstream_calls(upstreams) == before


# -- NUL bytes: a hosted image's name, an upload's part headers, a provider key ------------------------

@pytest.mark.parametrize("name", ["x%00.png", "%00", "a%00/..%00.png"])
def test_nul_in_a_hosted_image_name_is_a_404(gw: InProcessGateway, name: str) -> None:
    assert error(gw.request("GET", f"/images/{name}"), 404)["code"] in ("image_not_found", "not_found")


def _form(filename: bytes, content_type: bytes) -> bytes:
    b = b"--BB\r\n"
    return (b + b'Content-Disposition: form-data; name="model"\r\n\r\ngpt-image-1\r\n'
            + b + b'Content-Disposition: form-data; name="prompt"\r\n\r\na fox\r\n'
            + b + b'Content-Disposition: form-data; name="image"; filename="' + filename + b'"\r\n'
            + b"Content-Type: " + content_type + b"\r\n\r\n\x89PNG\r\n\x1a\n....\r\n--BB--\r\n")


@pytest.mark.parametrize(("filename", "content_type"), [(b"a\x00b.png", b"image/png"), (b"a\x01.png", b"image/png"),
                                                        (b"a.png", b"image/png\x00"), (b"a\x7f.png", b"image/png")])
def test_control_character_in_an_upload_part_is_a_400(gw: InProcessGateway, upstreams: dict[str, FakeServer],
                                                      filename: bytes, content_type: bytes) -> None:
    before = upstream_calls(upstreams)
    r = gw.request("POST", "/v1/images/edits", content=_form(filename, content_type),
                   headers={**AUTH, "content-type": "multipart/form-data; boundary=BB"})
    assert error(r, 400, "image")["code"] == "invalid_multipart"
    assert upstream_calls(upstreams) == before


def test_an_ordinary_odd_filename_still_goes_upstream(gw: InProcessGateway, upstreams: dict[str, FakeServer]) -> None:
    r = gw.request("POST", "/v1/images/edits", content=_form("é a\tb.png".encode(), b"image/png"),
                   headers={**AUTH, "content-type": "multipart/form-data; boundary=BB"})
    assert r.status_code == 200, r.text
    sent = fake_openai.last_request(upstreams["openai"].state).files["image"][0][0]
    assert unquote(sent) == "é a\tb.png"  # aiohttp percent-encodes a filename


def test_control_character_in_a_provider_key_is_a_401(gw: InProcessGateway, upstreams: dict[str, FakeServer]) -> None:
    before = upstream_calls(upstreams)
    r = gw.request("POST", "/v1/images/generations", json={"model": "gpt-image-1", "prompt": "a fox"},
                   headers={**AUTH, "x-provider-key": "sk-\x00abc"})
    assert error(r, 401)["code"] == "invalid_api_key"
    assert upstream_calls(upstreams) == before


# -- non-ASCII bearer tokens (hmac.compare_digest raises on non-ASCII str) -----------------------------

@pytest.mark.parametrize("token", ["é".encode(), "é".encode("latin-1"), b"\xff\xfe", "gw-clé".encode()])
@pytest.mark.parametrize(("method", "path"), [("POST", "/v1/images/generations"), ("GET", "/admin/deployments"),
                                              ("POST", "/admin/reload")])
def test_non_ascii_bearer_is_a_401(gw: InProcessGateway, token: bytes, method: str, path: str) -> None:
    r = gw.request(method, path, json={"model": "demo", "prompt": "a fox"},
                   headers=[(b"authorization", b"Bearer " + token)])
    assert error(r, 401)["code"] == "invalid_api_key"


def test_a_non_ascii_gateway_key_sent_as_utf8_is_accepted(tmp_path: Path) -> None:
    gw = InProcessGateway(tmp_path, {"GATEWAY_API_KEYS": f"{GW_KEY},{UTF8_KEY}"}).start()
    try:
        body = {"model": "demo", "prompt": "a fox", "size": "64x64"}
        for key, status in ((UTF8_KEY, 200), (GW_KEY, 200), ("gw-clé-other", 401)):
            r = gw.request("POST", "/v1/images/generations", json=body,
                           headers=[(b"authorization", b"Bearer " + key.encode())])
            assert r.status_code == status, r.text
    finally:
        gw.stop()
    gw.assert_secret_absent(GW_KEY, UTF8_KEY)


# -- "²" and friends as integers: str.isdigit() is true, int() raises -----------------------------------

@pytest.mark.parametrize("field", ["seed", "width", "height", "steps"])
@pytest.mark.parametrize("value", ["²", "-²", "１２", "--5", "9" * 5000, 10**400])
def test_unparseable_integer_is_a_400_on_zimage(gw: InProcessGateway, upstreams: dict[str, FakeServer], field: str,
                                               value: Any) -> None:
    before = upstream_calls(upstreams)
    r = gw.request("POST", "/v1/images/generations", json={"model": "Z-Image", "prompt": "a fox", field: value},
                   headers=AUTH)
    assert error(r, 400, field)["code"] == "invalid_value"
    assert upstream_calls(upstreams) == before


def test_huge_cfg_is_a_400_on_zimage(gw: InProcessGateway) -> None:
    r = gw.request("POST", "/v1/images/generations", json={"model": "Z-Image", "prompt": "a fox", "cfg": 10**400},
                   headers=AUTH)
    error(r, 400, "cfg")


@pytest.mark.parametrize("value", ["²", "１２", "9" * 5000, 2**32, 10**400, 4.5, [1]])
def test_unparseable_seed_is_a_400_on_midjourney(gw: InProcessGateway, upstreams: dict[str, FakeServer],
                                                 value: Any) -> None:
    before = upstream_calls(upstreams)
    r = gw.request("POST", "/v1/images/generations", json={"model": "mj-v7", "prompt": "a fox", "seed": value},
                   headers=AUTH)
    assert error(r, 400, "seed")["code"] == "invalid_value"
    assert upstream_calls(upstreams) == before


@pytest.mark.parametrize("value", ["²:1", "1:²", "9" * 5000 + ":1"])
def test_unparseable_aspect_ratio_is_a_400_on_grsai(gw: InProcessGateway, upstreams: dict[str, FakeServer],
                                                    value: str) -> None:
    before = upstream_calls(upstreams)
    r = gw.request("POST", "/v1/images/generations",
                   json={"model": "nano-banana", "prompt": "a fox", "aspect_ratio": value}, headers=AUTH)
    assert error(r, 400, "aspect_ratio")["code"] == "invalid_value"
    assert upstream_calls(upstreams) == before


@pytest.mark.parametrize(("length", "status"), [(b"\xb2", 200), (b"9" * 5000, 413)])
def test_odd_content_length_is_not_a_500(gw: InProcessGateway, length: bytes, status: int) -> None:
    """Latin-1 "²" is ignored (the body is read to its end under the cap); 5000 digits is over any cap."""
    r = gw.request("POST", "/v1/images/generations", content=b'{"model":"demo","prompt":"a fox","size":"64x64"}',
                   headers=[(b"authorization", f"Bearer {GW_KEY}".encode()), (b"content-type", b"application/json"),
                            (b"content-length", length)])
    assert r.status_code == status, r.text
    if status == 413:
        assert error(r, 413)["code"] == "payload_too_large"


# -- "async": {} (unhashable in the truthy-set lookup) ----------------------------------------------------

@pytest.mark.parametrize("value", [{}, [], [True], {"a": 1}])
def test_non_scalar_async_is_a_400(gw: InProcessGateway, value: Any) -> None:
    r = gw.request("POST", "/v1/images/generations", json={"model": "demo", "prompt": "a fox", "async": value},
                   headers=AUTH)
    assert error(r, 400, "async")["code"] == "invalid_value"


# -- an unreachable reference image on Midjourney (was a 502 about a "generated image") ------------------

def test_reference_image_that_cannot_be_downloaded_is_a_400(gw: InProcessGateway,
                                                            upstreams: dict[str, FakeServer]) -> None:
    before = upstream_calls(upstreams)
    r = gw.request("POST", "/v1/images/edits", headers=AUTH,
                   json={"model": "mj-v7", "prompt": "a fox", "images": [{"image_url": "http://127.0.0.1:9/x.png"}]})
    err = error(r, 400, "image")
    assert err["code"] == "invalid_image_url" and "reference image 1" in err["message"]
    assert upstream_calls(upstreams) == before


def test_refused_cors_preflight_is_openai_shaped(gw: InProcessGateway) -> None:
    r = gw.request("OPTIONS", "/v1/images/generations",
                   headers={"origin": "http://app.test", "access-control-request-method": "BREW"})
    assert error(r, 400)["code"] == "cors_preflight_rejected"
    assert r.headers["access-control-allow-origin"] == "*"
    ok = gw.request("OPTIONS", "/v1/images/generations",
                    headers={"origin": "http://app.test", "access-control-request-method": "POST"})
    assert ok.status_code == 200


# -- DATA_DIR/images removed while the gateway runs ---------------------------------------------------------

def test_removed_image_folder_is_recreated(gw: InProcessGateway) -> None:
    body = {"model": "demo", "prompt": "a fox", "size": "64x64", "response_format": "url"}
    for _ in range(2):
        shutil.rmtree(gw.data_dir / "images", ignore_errors=True)
        r = gw.request("POST", "/v1/images/generations", json=body, headers=AUTH)
        assert r.status_code == 200, r.text
        url = r.json()["data"][0]["url"]
        image = gw.request("GET", httpx.URL(url).path)
        assert image.status_code == 200 and image.content.startswith(b"\x89PNG")
