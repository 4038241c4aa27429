"""Fake OpenAI-compatible chat endpoint used as the prompt-enhancement LLM.

POST /v1/chat/completions answers in the chat.completion shape; ``state.mode`` picks how the
assistant content (a JSON object {prompt, aspect_ratio}) is delivered or broken:

clean       the JSON object as the whole content
fenced      inside a ```json fence
chatter     with prose before and after (and braces in the prose)
garbage     no JSON at all
slow        sleeps ``state.slow_s`` before sending anything
slow_body   sends the headers at once, then dribbles the body over ``state.slow_s``
url_inside  pretty-printed JSON whose prompt contains "https://example.com/x" and "// ..." text
no_content  message.content is null
error500    HTTP 500 with an OpenAI error body

Auth: ``Authorization: Bearer <token>`` is required (401 otherwise); when ``state.api_key`` is set
the token must equal it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import web

from tests.upstreams.base import FakeServer, FakeState, recording_middleware, serve_forever

MODES = ("clean", "fenced", "chatter", "garbage", "slow", "slow_body", "url_inside", "no_content", "error500")
URL_IN_PROMPT = "https://example.com/x"
COMMENT_IN_PROMPT = "// this is not a comment"
REPLY_PROMPT = "A fluffy ginger cat wearing round spectacles reads a hardcover book in a sunlit armchair"


class LLMState(FakeState):
    def __init__(self, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        self.mode = "clean"
        self.slow_s = 2.0
        self.reply_prompt = REPLY_PROMPT
        self.reply_ratio: str | None = "3:2"

    def reset(self) -> None:
        self.clear()
        self.mode = "clean"
        self.slow_s = 2.0
        self.reply_prompt = REPLY_PROMPT
        self.reply_ratio = "3:2"


def _error(status: int, message: str, type_: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": type_, "param": None, "code": None}}, status=status
    )


def _content(state: LLMState) -> str | None:
    obj: dict[str, Any] = {"prompt": state.reply_prompt, "aspect_ratio": state.reply_ratio}
    plain = json.dumps(obj, ensure_ascii=False)
    mode = state.mode
    if mode == "fenced":
        return f"```json\n{plain}\n```"
    if mode == "chatter":
        return f"Sure! Here is the {{enhanced}} prompt you asked for:\n{plain}\nHope this helps :) {{done}}"
    if mode == "garbage":
        return "I'm sorry, but I can only describe pictures in words today."
    if mode == "url_inside":
        obj["prompt"] = f'{state.reply_prompt}, a poster reading "{URL_IN_PROMPT}" {COMMENT_IN_PROMPT} {{ok}}'
        return json.dumps(obj, ensure_ascii=False, indent=2)
    if mode == "no_content":
        return None
    return plain


def _completion(model: str, content: str | None) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 120, "completion_tokens": 80, "total_tokens": 200},
    }


def build_app(state: LLMState) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if not token or (state.api_key is not None and token != state.api_key):
            return _error(401, "Incorrect API key provided.", "invalid_request_error")
        body = request["rec"].json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _error(400, "'messages' is a required property", "invalid_request_error")
        model = str(body.get("model") or "gpt-4o-mini")

        if state.mode == "error500":
            return _error(500, "The server had an error while processing your request.", "server_error")
        if state.mode == "slow":
            await asyncio.sleep(state.slow_s)
        payload = json.dumps(_completion(model, _content(state)), ensure_ascii=False).encode()
        if state.mode != "slow_body":
            return web.Response(body=payload, content_type="application/json")

        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = len(payload)
        await resp.prepare(request)
        steps = 10
        size = -(-len(payload) // steps)
        try:
            for i in range(steps):
                await asyncio.sleep(state.slow_s / steps)
                await resp.write(payload[i * size : (i + 1) * size])
            await resp.write_eof()
        except (ConnectionResetError, ConnectionError):
            pass  # the client gave up, as it should
        return resp

    app = web.Application(middlewares=[recording_middleware(state)])
    app.router.add_post("/v1/chat/completions", chat)
    return app


def start(state: LLMState | None = None, port: int = 0) -> FakeServer:
    """Start the fake on 127.0.0.1 in a background thread; ``server.url + "/v1"`` is the base URL."""
    state = state if state is not None else LLMState()
    return FakeServer(build_app(state), state, port).start()


def main() -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible chat LLM for prompt enhancement")
    parser.add_argument("--port", type=int, default=9101)
    parser.add_argument("--mode", choices=MODES, default="clean")
    parser.add_argument("--api-key", default=None, help="require exactly this Bearer token")
    parser.add_argument("--slow-s", type=float, default=2.0)
    args = parser.parse_args()
    state = LLMState(args.api_key)
    state.mode = args.mode
    state.slow_s = args.slow_s
    serve_forever(build_app(state), args.port)


if __name__ == "__main__":
    main()
