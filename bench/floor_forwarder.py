"""The floor: the least a Python forwarder can do (no validation, routing or logging).

    OPENAI_BASE_URL=http://127.0.0.1:8001/v1 python bench/floor_forwarder.py --port 8002
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, TCPConnector, web

UPSTREAM = os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8001/v1").rstrip("/") + "/images/generations"
HEADERS = {"Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', 'sk-bench-upstream')}",
           "Content-Type": "application/json"}
SESSION = web.AppKey("session", ClientSession)


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    async with request.app[SESSION].post(UPSTREAM, data=body, headers=HEADERS) as upstream:
        return web.Response(body=await upstream.read(), status=upstream.status, content_type="application/json")


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def pooled_session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = ClientSession(connector=TCPConnector(limit=0))
    yield
    await app[SESSION].close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8002)
    app = web.Application()
    app.cleanup_ctx.append(pooled_session)
    app.router.add_post("/v1/images/generations", forward)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=ap.parse_args().port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
