"""Fake Azure OpenAI image deployments on 127.0.0.1: fake_openai's Images API at Azure's addresses.

POST /openai/deployments/{deployment}/images/{generations,edits}?api-version=... with the key in `api-key`
(learn.microsoft.com/azure/ai-services/openai/how-to/dall-e). The deployment names the model (state.deployments:
name → model); the body and answer are OpenAI's (fake_openai's handlers). Azure's own answers: no or a wrong
key 401 `{"error": {"code": "401", "message": "Access denied due to invalid subscription key..."}}`, an
unknown deployment 404 DeploymentNotFound, no api-version 404 "Resource not found", and the content filter's
400 (`content_filtered()`): code content_policy_violation with an inner error ResponsibleAIPolicyViolation.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from . import fake_openai
from .base import FakeServer, FakeState, Fault, recording_middleware

API_PATH = "/openai/deployments/"


def content_filtered() -> Fault:
    body = {"error": {"code": "content_policy_violation", "message": "Your request was rejected as a result of "
                      "our safety system. Your prompt may contain text that is not allowed by our safety system.",
                      "param": None, "type": None,
                      "inner_error": {"code": "ResponsibleAIPolicyViolation",
                                      "content_filter_results": {"violence": {"filtered": True, "severity": "high"},
                                                                 "sexual": {"filtered": False, "severity": "safe"}}}}}
    return Fault(400, body, match=API_PATH)


def throttled(retry_after: str = "2") -> Fault:
    body = {"error": {"code": "429", "message": "Requests to the Images_Generations API have exceeded the rate "
                      f"limit of your current tier. Please retry after {retry_after} seconds."}}
    return Fault(429, body, headers={"Retry-After": retry_after}, match=API_PATH)


class AzureState(FakeState):
    def __init__(self, api_key: str) -> None:
        super().__init__()
        self.api_key = api_key
        self.deployments = {"my-dalle": "dall-e-3", "img": "gpt-image-1"}

    def reset(self) -> None:
        self.clear()


def _azure_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


class _Handlers(fake_openai._Handlers):
    state: AzureState

    def _check(self, request: web.Request) -> str | web.Response:
        request["rec"].extra["api_version"] = request.query.get("api-version")
        if request.headers.get("api-key") != self.state.api_key:
            return _azure_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                                "Make sure to provide a valid key for an active subscription and use a correct "
                                "regional API endpoint for your resource.")
        if not request.query.get("api-version"):
            return _azure_error(404, "404", "Resource not found")
        model = self.state.deployments.get(request.match_info["deployment"])
        if model is None:
            return _azure_error(404, "DeploymentNotFound", "The API deployment for this resource does not exist.")
        return model

    async def az_generations(self, request: web.Request) -> web.StreamResponse:
        return await self._azure(request, "generation")

    async def az_edits(self, request: web.Request) -> web.StreamResponse:
        return await self._azure(request, "edit")

    async def _azure(self, request: web.Request, kind: str) -> web.StreamResponse:
        model = self._check(request)
        if isinstance(model, web.Response):
            return model
        rec = self._rec(request)
        rec.extra["deployment_model"] = model
        try:
            job = fake_openai._parse_job(rec, kind, model)  # no `model` in the body: the deployment's
            if kind == "edit":
                job.image_count, job.has_mask, _ = fake_openai._edit_inputs(rec)
        except fake_openai.ApiError as err:
            return fake_openai._error_response(err)
        return await self._answer(request, rec, job)


def start(api_key: str) -> FakeServer:
    state = AzureState(api_key)
    h = _Handlers(state)
    app = web.Application(middlewares=[recording_middleware(state)], client_max_size=64 << 20)
    app[fake_openai.FILES] = {}
    app.router.add_post(API_PATH + "{deployment}/images/generations", h.az_generations)
    app.router.add_post(API_PATH + "{deployment}/images/edits", h.az_edits)
    app.router.add_get("/files/{name}", h.files)
    return FakeServer(app, state).start()


def sent_json(state: FakeState) -> list[dict[str, Any]]:
    return [r.json for r in state.requests if r.path.startswith(API_PATH) and isinstance(r.json, dict)]
