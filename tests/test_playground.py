"""The playground page (GET /) and the API docs page (GET /docs) in real headless Chromium.

Debian's chromium (installed by `make test`), driven by Playwright through `executable_path`; the
gateway is a real process, the streamed route a real fake OpenAI upstream sending partial images.
Screenshots are kept under each test's temporary folder (playground-*.png).
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.upstreams.base import FakeServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GATEWAY_KEY = "gw-playground-key-5566778899"
UPSTREAM_KEY = "sk-playground-upstream-1234567890"
TIMEOUT_MS = 30_000

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is missing: `make test` installs it (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        # Playwright gives the browser a new empty profile (--user-data-dir) of its own.
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def gw(gateway: GatewayFactory, openai_upstream: FakeServer) -> Iterator[GatewayProcess]:
    openai_upstream.state.stream_gap_s = 0.4  # partial images arrive visibly before the final one
    g = gateway({"GATEWAY_API_KEYS": GATEWAY_KEY, "OPENAI_API_KEY": UPSTREAM_KEY,
                 "OPENAI_BASE_URL": openai_upstream.url + "/v1"})
    yield g
    g.assert_secret_absent(GATEWAY_KEY, UPSTREAM_KEY)


@pytest.fixture
def page(browser: Any, gw: GatewayProcess) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.requests = []
    pg.console_errors = []
    pg.on("request", lambda r: pg.requests.append(r))
    pg.on("console", lambda m: m.type == "error" and pg.console_errors.append(m.text))
    yield pg
    # The key went only to the gateway: every request the page made was to the gateway's origin.
    for r in pg.requests:
        assert r.url.startswith(gw.url + "/") or r.url.startswith(("data:", "blob:")), r.url
    context.close()


def _open_with_key(page: Any, gw: GatewayProcess, key: str) -> None:
    page.goto(gw.url + "/")
    page.fill("#key", key)
    page.dispatch_event("#key", "change")


def _png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buf, "PNG")
    return buf.getvalue()


def test_playground_generates_a_demo_image_and_an_edit(page: Any, gw: GatewayProcess, tmp_path: Path) -> None:
    _open_with_key(page, gw, GATEWAY_KEY)
    page.wait_for_selector("#model option[value='demo']", state="attached")
    assert page.input_value("#model") == "demo"
    assert page.get_by_label("Prompt").is_visible()
    # The key is kept in this tab's session storage, not in local storage.
    assert page.evaluate("sessionStorage.getItem('image-gateway-key')") == GATEWAY_KEY
    assert page.evaluate("localStorage.length") == 0

    page.get_by_label("Prompt").fill("a lighthouse at dusk")
    page.select_option("#size", "256x256")
    page.fill("#n", "2")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#status")).to_have_text("Done: 2 images.")
    expect(page.locator("#results img")).to_have_count(2)
    assert page.evaluate("Promise.all([...document.querySelectorAll('#results img')].map(i => i.decode()"
                         ".then(() => [i.naturalWidth, i.naturalHeight])))") == [[256, 256], [256, 256]]
    assert page.is_hidden("#error")
    links = page.locator("#results a[download]")
    assert links.count() == 2 and links.first.get_attribute("download") == "image-1.png"
    with page.expect_download() as dl:
        links.first.click()
    saved = tmp_path / "download.png"
    dl.value.save_as(saved)
    assert Image.open(saved).size == (256, 256)
    page.screenshot(path=str(tmp_path / "playground-demo.png"), full_page=True)

    # An image to edit: the same page posts it to /v1/images/edits (multipart).
    upload = tmp_path / "in.png"
    upload.write_bytes(_png((200, 30, 30)))
    page.set_input_files("#image", str(upload))
    page.fill("#n", "1")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#status")).to_have_text("Done: 1 image.")
    expect(page.locator("#results img")).to_have_count(1)
    assert any(r.url.endswith("/v1/images/edits") and r.method == "POST" for r in page.requests)
    # The first model list went out before a key was typed (without one); every call after it carried it.
    api = [r for r in page.requests if "/v1/" in r.url]
    assert api[0].url.endswith("/v1/models") and "authorization" not in api[0].headers
    assert len(api) >= 4 and all(r.headers.get("authorization") == f"Bearer {GATEWAY_KEY}" for r in api[1:])
    # Nothing failed on the page but the first model list (401 before the key was typed).
    assert page.console_errors == ["Failed to load resource: the server responded with a status of 401 "
                                   "(Unauthorized)"], page.console_errors
    gw.remember(page.content())


def test_playground_shows_partial_images_while_streaming(page: Any, gw: GatewayProcess, tmp_path: Path) -> None:
    _open_with_key(page, gw, GATEWAY_KEY)
    page.wait_for_selector("#model option[value='gpt-image-1']", state="attached")
    page.select_option("#model", "gpt-image-1")
    page.get_by_label("Prompt").fill("an otter, in stages")
    page.select_option("#size", "256x256")
    page.get_by_role("button", name="Generate").click()
    partial = page.wait_for_selector("#partial img.partial")
    assert partial.get_attribute("src").startswith("data:image/png;base64,")
    assert "Partial image" in page.text_content("#status")
    assert page.eval_on_selector("#progress", "p => !p.hidden && p.value > 0")
    page.screenshot(path=str(tmp_path / "playground-partial.png"))
    expect(page.locator("#status")).to_have_text("Done: 1 image.")
    expect(page.locator("#results img")).to_have_count(1)
    assert page.locator("#partial img").count() == 0  # the preview gives way to the result
    page.screenshot(path=str(tmp_path / "playground-streamed.png"), full_page=True)
    assert (tmp_path / "playground-partial.png").stat().st_size > 1000
    gw.remember(page.content())


def test_playground_shows_an_error_for_a_bad_key(page: Any, gw: GatewayProcess, tmp_path: Path) -> None:
    bad = "gw-not-a-real-key-000111"
    _open_with_key(page, gw, bad)
    page.wait_for_selector("#error:not([hidden])")
    assert "Invalid gateway key" in page.text_content("#error")
    page.get_by_label("Prompt").fill("anything")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#status")).to_have_text("Failed.")
    text = page.text_content("#error")
    assert "Invalid gateway key" in text and "401" in text and "Check the gateway key" in text
    assert bad not in text
    assert page.locator("#results img").count() == 0
    page.screenshot(path=str(tmp_path / "playground-bad-key.png"))
    gw.remember(page.content())
    gw.assert_secret_absent(bad)


def test_docs_page_renders_swagger_ui_offline(page: Any, gw: GatewayProcess, tmp_path: Path) -> None:
    page.goto(gw.url + "/docs")
    page.wait_for_selector(".swagger-ui .opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_text_contents()
    assert any("/v1/images/generations" in p for p in paths) and any("/v1/images/tasks" in p for p in paths)
    assert not page.console_errors, page.console_errors  # no CSP violation, nothing failed to load
    page.screenshot(path=str(tmp_path / "docs.png"))
    assert page.get_by_role("link", name="Playground").get_attribute("href") == "/"
