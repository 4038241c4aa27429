"""One gateway with every provider wired to its fake upstream on 127.0.0.1, for the client tests.

The routes the conformance tests cover: demo, OpenAI (gpt-image-1, dall-e-3), Midjourney (mj-v6),
GrsAi (nano-banana) and Z-Image. The gateway has a gateway key (as a deployment in front of users
would), and configured provider keys; the tests check that none of the keys leaks.

`stack()` runs the gateway in this process (tests/inprocess.py): for the surface tests, which drive
it with httpx and the openai SDK. `process_stack()` starts a real gateway process: the real client
libraries (the Node SDKs run by node, LangChain's wrapper, which builds its own HTTP client) reach
it over a socket, as they would a deployed gateway.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from PIL import Image

from tests.gateway import GatewayProcess
from tests.inprocess import InProcessGateway
from tests.upstreams import fake_grsai, fake_mj, fake_openai, fake_sd
from tests.upstreams.base import FakeServer
from tests.upstreams.fake_grsai import GrsAiState
from tests.upstreams.fake_sd import SDState

GW_KEY = "gw-SECRET-clients-0123456789"
OPENAI_KEY = "sk-openai-SECRET-clients-abcdef"
MJ_KEY = "mj-SECRET-clients-13579bdf"
GRS_KEY = "sk-grs-SECRET-clients-2468ace0"
SD_KEY = "sk-sd-SECRET-clients-feedface"
KEYS = (GW_KEY, OPENAI_KEY, MJ_KEY, GRS_KEY, SD_KEY)
AUTH = {"Authorization": f"Bearer {GW_KEY}"}

ROUTES = ("demo", "gpt-image-1", "dall-e-3", "mj-v6", "nano-banana", "Z-Image")
EDIT_ROUTES = ("demo", "gpt-image-1", "mj-v6", "nano-banana")  # Z-Image only generates from text
CONFIG = """
router: {retries: 0, cooldown_failures: 1000}
providers:
  midjourney: {poll_interval_s: 0.05, concurrency: 16, queue_size: 16}
  grsai: {poll_interval_s: 0.03}
"""

Gateway = InProcessGateway | GatewayProcess


@dataclass
class Stack:
    gw: Gateway
    ups: dict[str, FakeServer]

    def is_own(self, url: str) -> bool:
        """A URL on the gateway's own origin (scheme, host and port), under its image path."""
        u, g = urlsplit(url), urlsplit(self.gw.url)
        return (u.scheme, u.hostname, u.port) == (g.scheme, g.hostname, g.port) and u.path.startswith("/images/")

    def get(self, url: str, **kw: Any) -> httpx.Response:
        """GET on the gateway (in this process: through its transport) or on an upstream (httpx)."""
        if isinstance(self.gw, InProcessGateway) and url.startswith(self.gw.url):
            return self.gw.http.get(url, **kw)
        return httpx.get(url, timeout=30, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        """POST /v1<path> with the gateway key, as a raw HTTP client; the answer is kept for the key check."""
        headers = {**AUTH, **kw.pop("headers", {})}
        url = self.gw.base_url + path
        if isinstance(self.gw, InProcessGateway):
            r = self.gw.http.post(url, headers=headers, **kw)
        else:
            r = httpx.post(url, headers=headers, timeout=60, **kw)
            self.gw.remember(r.text)
        return r

    def fetch(self, url: str, auth: bool = False) -> bytes:
        """Download a returned URL as a client does (Open WebUI sends the caller's key along)."""
        r = self.get(url, headers=AUTH if auth else {})
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
        assert r.headers["content-type"].startswith("image/"), r.headers["content-type"]
        return r.content

    def last(self, upstream: str, path_end: str) -> Any:
        """The upstream's latest recorded request whose path ends so."""
        return next(r for r in reversed(self.ups[upstream].state.requests) if r.path.endswith(path_end))


def image(data: bytes | str) -> Image.Image:
    """Decode (bytes, or base64 text) and check it is a real image."""
    raw = base64.b64decode(data) if isinstance(data, str) else data
    img = Image.open(io.BytesIO(raw))
    img.load()
    return img


def png(color: tuple[int, int, int] = (10, 200, 30), size: tuple[int, int] = (64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (*color, 255)).save(buf, "PNG")
    return buf.getvalue()


def env_for(ups: dict[str, FakeServer], **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": ups["openai"].url + "/v1", "OPENAI_API_KEY": OPENAI_KEY,
            "MJ_BASE_URL": ups["mj"].url, "MJ_API_KEY": MJ_KEY,
            "GRSAI_BASE_URL": ups["grsai"].url, "GRSAI_API_KEY": GRS_KEY,
            "SD_BASE_URL": ups["sd"].url, "SD_API_KEY": SD_KEY,
            "GATEWAY_API_KEYS": GW_KEY, **extra}


@contextmanager
def upstreams() -> Iterator[dict[str, FakeServer]]:
    ups = {"openai": fake_openai.start(), "mj": fake_mj.start(secret=MJ_KEY, step_s=0.03),
           "grsai": fake_grsai.start(GrsAiState(api_key=GRS_KEY, step_s=0.02)),
           "sd": fake_sd.start(SDState(api_key=SD_KEY))}
    try:
        yield ups
    finally:
        for s in ups.values():
            s.stop()


@contextmanager
def stack(workdir: Path, config_extra: str = "", **env: str) -> Iterator[Stack]:
    """The gateway in this process."""
    with upstreams() as ups, InProcessGateway(workdir, env_for(ups, **env), CONFIG + config_extra) as gw:
        yield Stack(gw, ups)


@contextmanager
def process_stack(workdir: Path, config_extra: str = "", **env: str) -> Iterator[Stack]:
    """A real gateway process on 127.0.0.1 (for clients that open their own connections)."""
    with upstreams() as ups:
        gw = GatewayProcess(workdir, env_for(ups, **env), CONFIG + config_extra).start()
        try:
            yield Stack(gw, ups)
        finally:
            gw.kill()


def check_keys(st: Stack, *texts: Any) -> None:
    st.gw.remember(*texts)
    st.gw.assert_secret_absent(*KEYS)
