"""Property-based fuzz of every endpoint (issue 12, item 4): malformed JSON, wrong types, deep nesting,
odd unicode, huge numbers, NULs, broken multipart and bad headers never get a 5xx, never drop the
connection, and every 4xx carries an OpenAI-shaped error.

The real app runs in this process (tests/inprocess.py) with the demo provider and real fake upstreams
on 127.0.0.1 (OpenAI, Z-Image, Midjourney, GrsAi). Hypothesis is derandomized (the same ~860 requests
on every run, no example database) and bounded: the whole file costs about 15 s of CPU.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.inprocess import InProcessGateway
from tests.upstreams import fake_grsai, fake_mj, fake_openai, fake_sd
from tests.upstreams.base import FakeServer

GW_KEY = "gw-fuzz-gateway-0123456789"
ADMIN_KEY = "adm-fuzz-admin-0123456789"
UPSTREAM_KEYS = {"OPENAI_API_KEY": "sk-fuzz-openai-0123456789", "SD_API_KEY": "sk-fuzz-zimage-0123456789",
                 "MJ_API_KEY": "mj-fuzz-proxy-0123456789", "GRSAI_API_KEY": "sk-fuzz-grsai-0123456789"}
SECRETS = [GW_KEY, ADMIN_KEY, *UPSTREAM_KEYS.values()]
CONFIG = """
router: {retries: 0, cooldown_failures: 1000000}
providers:
  midjourney: {poll_interval_s: 0.02, concurrency: 64, queue_size: 64}
  grsai: {poll_interval_s: 0.02}
"""
_FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def fuzz(examples: int) -> settings:
    return settings(_FUZZ, max_examples=examples)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


PNG = _png()
DATA_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()
DEAD_URL = "http://127.0.0.1:9/x.png"  # loopback, nothing listens: the fuzz never reaches another host

# Values chosen to break parsers: lookalike digits, NULs, bidi/emoji, huge numbers, near-miss formats.
ODD_STRINGS = ["", " ", "²", "-²", "١٢", "１２", "Ⅻ", "--5", "\x00", "a\x00b", "\r\n", "\u202e", "💥", "é",
               "-1", "0", "1e999", "NaN", "Infinity", "99999999999999999999999", "9" * 5000, "auto", "1x1",
               "0x0", "64x64", "99999x99999", "²x²", "16:9", "²:1", "1:0", "0:0", "9" * 5000 + ":1", "：",
               "true", "false", "yes", "on", "null", "{}", "[]", "http://", DEAD_URL, DATA_URL,
               "data:image/png;base64,!!!", "data:,", "file:///etc/passwd", "%00", "../../x", "x" * 20000]
MODELS = ["demo", "gpt-image-1", "dall-e-2", "dall-e-3", "Z-Image", "mj-v7", "niji-6", "nano-banana",
          "sora-image", "unknown-model", "", "é", "\x00", "demo/../x"]
# Half the examples on the two routes that do most (demo: local; gpt-image-1: a real HTTP upstream).
models = st.sampled_from(["demo", "gpt-image-1"]) | st.sampled_from(MODELS)
IMAGE_FIELDS = ["prompt", "model", "n", "size", "quality", "style", "response_format", "output_format",
                "output_compression", "background", "moderation", "input_fidelity", "partial_images", "stream",
                "user", "async", "webhook_url", "seed", "width", "height", "steps", "cfg", "negative_prompt",
                "aspect_ratio", "aspectRatio", "image_size", "imageSize", "enhance", "parse_ratio", "images",
                "image", "mask"]
CHAT_FIELDS = ["messages", "model", "stream", "stream_options", "n", "prompt", "enhance", "user", "size",
               "quality", "seed", "width", "height", "steps", "aspect_ratio", "output_format"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.sampled_from([10**400, -(10**400), 2**63, 2**31]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(ODD_STRINGS), st.text(max_size=30))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.sampled_from(["url", "image_url", "type", "text", "file_id", "x"])
                                        | st.text(max_size=6), inner, max_size=3), max_leaves=6)
keys = st.sampled_from(IMAGE_FIELDS) | st.text(max_size=12)


def mostly(value: Any, other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`value` three times in four: most examples keep a sane baseline, so they get past the first check."""
    return st.one_of(st.just(value), st.just(value), st.just(value), other)


def deep(depth: int, kind: str) -> bytes:
    return (b"[" * depth + b"]" * depth) if kind == "list" else (b'{"a":' * depth + b"1" + b"}" * depth)


@st.composite
def json_bytes(draw: st.DrawFn, base: dict[str, Any], fields: list[str]) -> bytes:
    """`base` with a few fields replaced, removed or added; then encoded, sometimes badly."""
    body = dict(base)
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from(fields) | keys)
        if draw(st.integers(0, 5)) == 0:
            body.pop(key, None)
        else:
            body[key] = draw(values)
    how = draw(st.sampled_from(["json", "json", "json", "deep", "ascii", "truncate", "mangle", "other", "raw"]))
    if how == "raw":
        return draw(st.binary(max_size=64))
    if how == "other":  # valid JSON that is not an object
        return json.dumps(draw(values)).encode()
    text = json.dumps(body, ensure_ascii=how == "ascii")
    if how == "deep":  # nested past (or just under) the decoder's recursion limit, at one field
        depth = draw(st.sampled_from([2, 50, 500, 900, 990, 1000, 1100, 5000]))
        field = draw(st.sampled_from(fields)).encode()
        nested = deep(depth, draw(st.sampled_from(["list", "dict"])))
        return text.encode()[:-1] + b', "' + field + b'": ' + nested + b"}"
    raw = text.encode("utf-8", "surrogatepass")
    if how == "truncate":
        return raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "mangle":
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\x00", b"\xff", b"\xed\xa0\x80", b"\\", b'"', b",", b"}"])) + raw[at:]
    return raw


# -- headers ---------------------------------------------------------------------------------------------

header_values = st.sampled_from([b"", b" ", b"\x00", "é".encode(), "é".encode("latin-1"), b"\xff\xfe", b"\t",
                                 b"Bearer", b"Bearer ", b"Bearer \xc3\xa9", b"Bearer \x00", b"bearer  x  ",
                                 b"Basic Zm9vOmJhcg==", b"respond-async", b"respond-async; wait=5",
                                 b"\xc2\xb2", b"\xb2", b"-1", b"99999999999999999999", b"x" * 9000]
                                ) | st.binary(max_size=24)
HEADER_NAMES = ["authorization", "x-provider-key", "prefer", "idempotency-key", "x-request-id", "origin",
                "accept", "accept-encoding", "host", "x-forwarded-for", "x-forwarded-proto", "cookie", "user-agent",
                "content-length", "content-type"]


@st.composite
def headers(draw: st.DrawFn, locked: bool) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    if locked and draw(mostly(True, st.just(False))):  # mostly past the gateway key, so the body gets parsed
        out.append((b"authorization", f"Bearer {GW_KEY}".encode()))
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(HEADER_NAMES)).encode()
        if any(n == name for n, _ in out):
            continue
        value = draw(header_values)
        if name == b"authorization" and draw(st.booleans()):
            value = b"Bearer " + value
        out.append((name, value))
    return out


# -- multipart -------------------------------------------------------------------------------------------

PART_NAMES = ["prompt", "model", "image", "image[]", "image[0]", "image[9999999999]", "mask", "n", "size",
              "response_format", "stream", "seed", "async", "user", "", "a\x00b", "é", 'x"y']
FILENAMES = [b"a.png", b"", b"a\x00b.png", b"a\x01b", b"a\x7f", b"\xc3\xa9.png", b"\xff\xfe.png", b'a"b.png',
             b"a\\b.png", b"../../etc/passwd", b"a\tb.png", b"x" * 5000, b"a;b=c.png", b"%00.png"]
CONTENT_TYPES = [b"image/png", b"", b"application/octet-stream", b"image/png\x00", b"image/\xc3\xa9", b"text/x\x01"]
BOUNDARY = b"fuzzBoundary7MA4YWxk"


@st.composite
def multipart(draw: st.DrawFn, model: str) -> tuple[bytes, bytes]:
    """(content type header, body): a form with odd parts, then maybe broken on purpose."""
    parts = [(b"model", None, None, model.encode()), (b"prompt", None, None, b"a red fox"),
             (b"size", None, None, b"64x64"),
             (b"image", draw(mostly(b"a.png", st.sampled_from(FILENAMES))), draw(mostly(b"image/png", st.sampled_from(
                 CONTENT_TYPES))), PNG)]
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(PART_NAMES)).encode("utf-8", "surrogatepass")
        if draw(st.booleans()):  # a file part
            data = draw(st.sampled_from([PNG, b"", b"not an image", PNG[:20]]) | st.binary(max_size=40))
            parts.append((name, draw(st.sampled_from(FILENAMES)), draw(st.sampled_from(CONTENT_TYPES)), data))
        else:
            value = draw(values)
            text = value if isinstance(value, str) else json.dumps(value)
            parts.append((name, None, None, text.encode("utf-8", "surrogatepass")))
    if draw(st.integers(0, 4)) == 0:
        parts = parts[draw(st.integers(0, len(parts))):]
    body = b""
    for name, filename, ctype, data in parts:
        disp = b'Content-Disposition: form-data; name="' + name + b'"'
        if filename is not None:
            disp += b'; filename="' + filename + b'"'
        head = disp + (b"\r\nContent-Type: " + ctype if ctype else b"")
        body += b"--" + BOUNDARY + b"\r\n" + head + b"\r\n\r\n" + data + b"\r\n"
    body += b"--" + BOUNDARY + b"--\r\n"
    ctype = b"multipart/form-data; boundary=" + BOUNDARY
    broken = draw(st.sampled_from(["none", "none", "no-boundary", "empty-boundary", "wrong-boundary", "quoted",
                                   "truncate", "no-end", "lf-only", "junk-header", "no-disposition", "garbage"]))
    if broken == "no-boundary":
        ctype = b"multipart/form-data"
    elif broken == "empty-boundary":
        ctype = b"multipart/form-data; boundary="
    elif broken == "wrong-boundary":
        ctype = b"multipart/form-data; boundary=\xc2\xb2other"
    elif broken == "quoted":
        ctype = b'multipart/form-data; charset=\xc2\xb2; boundary="' + BOUNDARY + b'"'
    elif broken == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif broken == "no-end":
        body = body[: -len(b"--" + BOUNDARY + b"--\r\n")]
    elif broken == "lf-only":
        body = body.replace(b"\r\n", b"\n")
    elif broken == "junk-header":
        body = body.replace(b"Content-Disposition", b"X-Junk\r\nContent-Disposition", 1)
    elif broken == "no-disposition":
        body = body.replace(b"Content-Disposition: form-data; ", b"Content-Type: text/plain; ", 1)
    elif broken == "garbage":
        body = draw(st.binary(max_size=80)) + body
    return ctype, body


# -- the gateways ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, str]]:
    servers: list[FakeServer] = [fake_openai.start(), fake_sd.start(), fake_mj.start(step_s=0.01, progress_steps=[50]),
                                 fake_grsai.start(step_s=0.01, progress_steps=[50])]
    yield {"OPENAI_BASE_URL": servers[0].url + "/v1", "SD_BASE_URL": servers[1].url, "MJ_BASE_URL": servers[2].url,
           "GRSAI_BASE_URL": servers[3].url}
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def gateways(tmp_path_factory: pytest.TempPathFactory, upstreams: dict[str, str]) -> Iterator[dict[str, Any]]:
    """`open`: no gateway keys (the bearer token is the caller's provider key); `locked`: gateway + admin keys."""
    env = {**upstreams, **UPSTREAM_KEYS, "WEBHOOK_ATTEMPTS": "1"}
    root = tmp_path_factory.mktemp("fuzz")
    gws = {"open": InProcessGateway(root / "open", env, CONFIG).start(),
           "locked": InProcessGateway(root / "locked", {**env, "GATEWAY_API_KEYS": GW_KEY, "ADMIN_API_KEY": ADMIN_KEY},
                                      CONFIG).start()}
    # Real task ids (finished, cancelled) for the task endpoints, beside made-up ones.
    tasks = []
    for name, gw in gws.items():
        auth = {"authorization": f"Bearer {GW_KEY}"} if name == "locked" else {}
        for _ in range(2):
            r = gw.request("POST", "/v1/images/generations", headers={**auth, "prefer": "respond-async"},
                           json={"model": "demo", "prompt": "a fox", "size": "64x64"})
            assert r.status_code == 202, r.text
            tasks.append(r.json()["id"])
    yield {**gws, "tasks": tasks}
    for gw in gws.values():
        gw.stop()
    for gw in gws.values():
        gw.assert_secret_absent(*SECRETS)


def check(r: httpx.Response, what: str) -> None:
    """Below 500, and a 4xx is `{"error": {message, type, param, code}}`; no internal error in a stream either."""
    assert r.status_code < 500, f"{what} -> {r.status_code}: {r.text[:500]}"
    assert "internal_error" not in r.text, f"{what} -> an internal error in the body: {r.text[:500]}"
    assert r.headers.get("x-request-id"), what
    if r.status_code >= 400:
        try:
            err = r.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise AssertionError(f"{what} -> {r.status_code} without an OpenAI-shaped body: {r.text[:300]}") from None
        assert set(err) == {"message", "type", "param", "code"}, f"{what} -> {err}"
        assert isinstance(err["message"], str) and err["message"] and isinstance(err["type"], str), what
        assert err["param"] is None or isinstance(err["param"], str), what
        assert err["code"] is None or isinstance(err["code"], str), what


def send(gateways: dict[str, Any], which: str, method: str, path: str, hdrs: list[tuple[bytes, bytes]],
         content: bytes | None = None, ctype: bytes | None = None) -> httpx.Response:
    gw: InProcessGateway = gateways[which]
    if ctype is not None and not any(n == b"content-type" for n, _ in hdrs):
        hdrs = [*hdrs, (b"content-type", ctype)]
    what = f"{which} {method} {path} headers={hdrs!r:.300} body={content!r:.300}"
    try:
        r = gw.request(method, path, headers=hdrs, content=content)
    except Exception as e:  # the app raised through the transport: a dropped connection for a real client
        raise AssertionError(f"{what} -> connection dropped: {type(e).__name__}: {e}") from e
    check(r, what)
    return r


which_gw = st.sampled_from(["open", "locked"])
JSON = b"application/json"


@fuzz(220)
@given(which=which_gw, data=st.data())
def test_generations(gateways: dict[str, Any], which: str, data: st.DataObject) -> None:
    base = {"model": data.draw(models), "prompt": "a red fox", "size": "64x64"}
    body = data.draw(json_bytes(base, IMAGE_FIELDS))
    ctype = data.draw(st.sampled_from([JSON, JSON, b"text/plain", b"", b"application/json; charset=\xc2\xb2"]))
    send(gateways, which, "POST", "/v1/images/generations", data.draw(headers(which == "locked")), body, ctype)


@fuzz(120)
@given(which=which_gw, data=st.data())
def test_edits_json(gateways: dict[str, Any], which: str, data: st.DataObject) -> None:
    base = {"model": data.draw(models), "prompt": "a red fox", "size": "64x64",
            "images": [{"image_url": data.draw(st.sampled_from([DATA_URL, DEAD_URL, "data:,x"]))}]}
    body = data.draw(json_bytes(base, IMAGE_FIELDS))
    send(gateways, which, "POST", "/v1/images/edits", data.draw(headers(which == "locked")), body, JSON)


@fuzz(160)
@given(which=which_gw, path=st.sampled_from(["/v1/images/edits", "/v1/images/variations"]), data=st.data())
def test_multipart(gateways: dict[str, Any], which: str, path: str, data: st.DataObject) -> None:
    ctype, body = data.draw(multipart(data.draw(models)))
    send(gateways, which, "POST", path, data.draw(headers(which == "locked")), body, ctype)


@fuzz(160)
@given(which=which_gw, data=st.data())
def test_chat_completions(gateways: dict[str, Any], which: str, data: st.DataObject) -> None:
    part = st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "input_image", "x"])},
                                 optional={"text": st.just("a fox") | values, "content": values,
                                           "image_url": st.fixed_dictionaries({"url": st.sampled_from(
                                               [DATA_URL, DEAD_URL, "ftp://x"])}) | values})
    content = data.draw(mostly("a red fox", st.lists(part, max_size=3) | values))
    role = data.draw(mostly("user", st.sampled_from(["system", "assistant", ""]) | values))
    base = {"model": data.draw(models), "size": "64x64",
            "messages": [{"role": role, "content": content}]}
    body = data.draw(json_bytes(base, CHAT_FIELDS))
    send(gateways, which, "POST", "/v1/chat/completions", data.draw(headers(which == "locked")), body, JSON)


segments = st.sampled_from(["", "x", "%00", "x%00.png", "..", "%2e%2e", "%2F", "a%2Fb", "%ff", "%", "%zz", "é",
                            "%C2%B2", "x" * 5000, ".hidden", "a.png", "%0d%0a"]) | st.text(max_size=20).map(
    lambda t: quote(t, safe=""))


@fuzz(200)
@given(which=which_gw, data=st.data())
def test_get_and_delete_endpoints(gateways: dict[str, Any], which: str, data: st.DataObject) -> None:
    seg = data.draw(segments | st.sampled_from(gateways["tasks"]))
    method, path = data.draw(st.sampled_from([
        ("GET", "/v1/models"), ("GET", "/v1/models/{}"), ("GET", "/v1/images/tasks/{}"),
        ("DELETE", "/v1/images/tasks/{}"), ("GET", "/v1/images/tasks/{}/events"), ("GET", "/images/{}"),
        ("GET", "/health"), ("GET", "/ready"), ("GET", "/metrics"), ("GET", "/admin/deployments"),
        ("POST", "/admin/reload"), ("PUT", "/v1/images/generations"), ("GET", "/{}"), ("OPTIONS", "/v1/models")]))
    hdrs = data.draw(headers(which == "locked"))
    if path.startswith("/admin") and data.draw(mostly(True, st.just(False))):
        value = f"Bearer {ADMIN_KEY}" if path == "/admin/deployments" else "Bearer " + data.draw(st.text(max_size=8))
        hdrs = [(n, v) for n, v in hdrs if n != b"authorization"]
        hdrs.append((b"authorization", value.encode("utf-8", "replace")))
    if method == "OPTIONS":
        hdrs = [*hdrs, (b"origin", b"http://a.test"), (b"access-control-request-method", data.draw(header_values))]
    body = data.draw(st.none() | st.binary(max_size=40))
    send(gateways, which, method, path.format(seg), hdrs, body)


def test_fuzz_covers_the_happy_path_too(gateways: dict[str, Any]) -> None:
    """The fuzz would pass vacuously if nothing ever got past validation: a plain request works."""
    r = send(gateways, "locked", "POST", "/v1/images/generations", [(b"authorization", f"Bearer {GW_KEY}".encode())],
             json.dumps({"model": "demo", "prompt": "a fox", "size": "64x64"}).encode(), JSON)
    assert r.status_code == 200 and r.json()["data"]
