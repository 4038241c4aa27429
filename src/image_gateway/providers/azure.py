"""Azure OpenAI image deployments (gpt-image-1, dall-e-3): the OpenAI adapter's translation at Azure's addresses.

References (read before writing this):
* https://learn.microsoft.com/en-us/azure/ai-services/openai/how-to/dall-e (REST: POST
  {endpoint}/openai/deployments/{deployment}/images/generations?api-version=..., `api-key` header;
  /images/edits as multipart; the body and answer are OpenAI's);
* https://learn.microsoft.com/en-us/azure/ai-services/openai/api-version-deprecation (API versions);
* Azure's content-filter answer: HTTP 400 `{"error": {"code": "content_policy_violation" | "contentFilter" |
  "content_filter", "message", "innererror"|"inner_error": {"code": "ResponsibleAIPolicyViolation",
  "content_filter_results": {...}}}}` (the inference spec's innerErrorCode enum).

A route names the deployment as its upstream model (`{name: my-dalle, provider: azure, upstream_model:
my-dalle-deployment}`), or a caller asks for `azure/<deployment>`. Deployment names say nothing of the model
behind them, so a route may set `base_model` (gpt-image-1, dall-e-3) for the model's quirks
(response_format / output_format), as OpenAI's `native_*` options can too. The `model` field is not sent:
the deployment in the path names it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote

import msgspec

from ..core.types import CallContext, ImageRequest
from ..errors import GatewayError, scrub
from . import openai
from .errmap import error
from .http import error_from_openai_body

DEFAULT_API_VERSION = "2024-10-21"  # the latest GA data-plane version (gpt-image-1 needs a -preview one)
_PATHS = {"generate": "images/generations", "edit": "images/edits", "variation": "images/variations"}
_FILTER_CODES = frozenset({"content_policy_violation", "contentfilter", "content_filter",
                           "responsibleaipolicyviolation"})


class Options(openai.Options, forbid_unknown_fields=True, frozen=True, kw_only=True):
    api_version: str = DEFAULT_API_VERSION


class RouteOptions(openai.RouteOptions, forbid_unknown_fields=True, frozen=True, kw_only=True):
    api_version: str = DEFAULT_API_VERSION
    base_model: str | None = None  # the model behind the deployment, for its quirks (else the deployment name)


class AzureOpenAIProvider(openai.OpenAIProvider):
    name: ClassVar[str] = "azure"
    env_prefix: ClassVar[str] = "AZURE_OPENAI"
    key_env: ClassVar[str | None] = "AZURE_OPENAI_API_KEY"
    base_url_env: ClassVar[str | None] = "AZURE_OPENAI_ENDPOINT"
    option_envs: ClassVar[Mapping[str, str]] = {"OPENAI_API_VERSION": "api_version"}
    default_base_url: ClassVar[str] = ""  # https://<resource>.openai.azure.com: each account's own
    label: ClassVar[str] = "Azure OpenAI"
    builtin_routes = ()
    Options = Options
    RouteOptions = RouteOptions

    def url_for(self, req: ImageRequest, ctx: CallContext) -> str:
        if not self.base_url:
            raise GatewayError("The azure provider has no endpoint: set AZURE_OPENAI_ENDPOINT "
                               "(https://<resource>.openai.azure.com).", status=503, type="server_error",
                               code="provider_not_configured")
        o: RouteOptions = self.route_options(ctx)
        deployment = quote(ctx.upstream_model, safe="")
        return (f"{self.base_url}/openai/deployments/{deployment}/{_PATHS[req.operation]}"
                f"?api-version={quote(o.api_version, safe='')}")

    def auth_headers(self, ctx: CallContext) -> dict[str, str]:
        return {"api-key": ctx.api_key} if ctx.api_key else {}

    def body_model(self, ctx: CallContext) -> str | None:
        return None

    def model_family(self, ctx: CallContext) -> str:
        o: RouteOptions = self.route_options(ctx)
        return o.base_model or ctx.upstream_model

    def upstream_error(self, status: int, body: bytes, headers: Any, ctx: CallContext) -> GatewayError:
        err = error_from_openai_body(status, body, headers, self.label, [ctx.api_key])
        if _filtered(body):
            err = scrub(error("policy", err.message, param=err.param), [ctx.api_key])
        elif status == 401:  # {"error": {"code": "401", "message": "Access denied due to invalid subscription key..."}}
            err = scrub(error("auth", f"Azure OpenAI rejected the API key: {err.message}"), [ctx.api_key])
        return err


def _filtered(body: bytes) -> bool:
    """Whether an error answer is Azure's content filter (its code, or the inner error's)."""
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return False
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return False
    inner = err.get("innererror") or err.get("inner_error") or err.get("innerError")
    codes = [err.get("code"), inner.get("code") if isinstance(inner, dict) else None]
    return any(isinstance(c, str) and c.lower() in _FILTER_CODES for c in codes)
