"""`<provider>/<upstream model>` names: served by that provider without a route, not listed, switchable off;
for every provider (OpenAI here, and fal, Replicate, BFL, Ark, DashScope, Automatic1111 through their fakes)."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from image_gateway.routing.deployments import Pool
from tests.conftest import InProcessFactory
from tests.inprocess import config
from tests.upstreams import fake_a1111, fake_ark, fake_bfl, fake_dashscope, fake_fal, fake_openai, fake_replicate
from tests.upstreams.base import FakeServer, Recorded
from tests.upstreams.fake_ark import ArkState
from tests.upstreams.fake_bfl import BflState
from tests.upstreams.fake_dashscope import DashScopeState
from tests.upstreams.fake_fal import FalState
from tests.upstreams.fake_replicate import ReplicateState

KEY = "sk-upstream-direct-0123456789abcdef"
GW_KEY = "gw-direct-key-0123456789"


def openai_env(up: FakeServer, **more: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": up.url + "/v1", **more}


def test_provider_slash_model_is_served_with_that_upstream_model(inprocess_gateway: InProcessFactory,
                                                                 openai_upstream: FakeServer) -> None:
    gw = inprocess_gateway(openai_env(openai_upstream))
    res = gw.openai().images.generate(model="openai/gpt-image-1-mini", prompt="a sea otter", size="1536x1024")
    rec = fake_openai.last_request(openai_upstream.state)
    assert rec.json["model"] == "gpt-image-1-mini"  # the upstream model, not the name asked for
    assert res.data and res.data[0].b64_json and res.size == "1536x1024"
    # the provider's defaults, as for a configured route: dall-e-2's prompt limit holds for a direct name too
    with pytest.raises(openai.BadRequestError) as e:
        gw.openai().images.generate(model="openai/dall-e-2", prompt="x" * 1001)
    assert e.value.body["code"] == "string_above_max_length"  # type: ignore[index]
    gw.assert_secret_absent(KEY)


def test_direct_names_are_accepted_but_not_listed(inprocess_gateway: InProcessFactory,
                                                  openai_upstream: FakeServer) -> None:
    gw = inprocess_gateway(openai_env(openai_upstream))
    ids = {m["id"] for m in gw.http.get("/v1/models").json()["data"]}
    assert {"gpt-image-1", "gemini-2.5-flash-image", "imagen-4.0-generate-001"} <= ids
    assert not any("/" in i for i in ids)
    gw.openai().images.generate(model="openai/gpt-image-1", prompt="otter")
    assert not any("/" in m["id"] for m in gw.http.get("/v1/models").json()["data"])  # still not, after use


@pytest.mark.parametrize("how", ["env", "yaml"])
def test_the_off_switch(inprocess_gateway: InProcessFactory, openai_upstream: FakeServer, how: str) -> None:
    env = openai_env(openai_upstream, **({"DIRECT_PROVIDER_MODELS": "false"} if how == "env" else {}))
    gw = inprocess_gateway(env, "server: {direct_provider_models: false}\n" if how == "yaml" else None)
    with pytest.raises(openai.NotFoundError) as e:
        gw.openai().images.generate(model="openai/gpt-image-1", prompt="otter")
    assert e.value.body["code"] == "model_not_found"  # type: ignore[index]
    assert gw.openai().images.generate(model="gpt-image-1", prompt="otter").data  # routes still work
    assert openai_upstream.state.count("/images/generations") == 1


@pytest.mark.parametrize("name", ["nope/gpt-image-1", "openai/", "openai/../../v1/models", "openai/x?y=1",
                                  "openai/a%2F..", "/gpt-image-1", "openai/" + "a" * 300])
def test_unknown_providers_and_unsafe_names_are_404(inprocess_gateway: InProcessFactory,
                                                     openai_upstream: FakeServer, name: str) -> None:
    gw = inprocess_gateway(openai_env(openai_upstream))
    r = gw.http.post("/v1/images/generations", json={"model": name, "prompt": "otter"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert openai_upstream.state.count("/v1/") == 0


def test_a_provider_without_a_key_is_401_naming_its_variable_and_a_request_key_serves_it(
        inprocess_gateway: InProcessFactory, openai_upstream: FakeServer) -> None:
    gw = inprocess_gateway({"OPENAI_BASE_URL": openai_upstream.url + "/v1", "GATEWAY_API_KEYS": GW_KEY})
    for name, variable in (("openai/gpt-image-1", "OPENAI_API_KEY"),
                           ("openrouter/google/gemini-2.5-flash-image", "OPENROUTER_API_KEY"),
                           ("google/imagen-4.0-generate-001", "GEMINI_API_KEY")):
        with pytest.raises(openai.AuthenticationError) as e:
            gw.openai(GW_KEY).images.generate(model=name, prompt="otter")
        assert variable in e.value.body["message"]  # type: ignore[index]
    client = gw.openai(GW_KEY, default_headers={"X-Provider-Key": KEY})
    assert client.images.generate(model="openai/gpt-image-1", prompt="otter").data
    assert fake_openai.last_request(openai_upstream.state).headers["authorization"] == f"Bearer {KEY}"
    gw.assert_secret_absent(KEY, GW_KEY)


def test_routes_win_and_direct_routes_are_made_once_per_snapshot(tmp_path: Path) -> None:
    cfg = config(tmp_path, {"OPENAI_API_KEY": KEY},
                 "routes:\n  - {name: openai/gpt-image-1, provider: openai, upstream_model: dall-e-3}\n")
    assert cfg.resolve("openai/gpt-image-1").upstream_model == "dall-e-3"  # type: ignore[union-attr]
    assert cfg.resolve("gpt-image-1") is cfg.routes["gpt-image-1"]
    assert cfg.direct_route("gpt-image-1") is None and not cfg._direct  # configured names never reach the cache
    first = cfg.resolve("openai/gpt-image-1-mini")
    assert first is not None and first.direct and first.provider == "openai"
    assert first.upstream_model == "gpt-image-1-mini" and cfg.resolve("openai/gpt-image-1-mini") is first
    assert config(tmp_path, {"OPENAI_API_KEY": KEY}).resolve("openai/gpt-image-1-mini") is not first  # new snapshot
    pool = Pool(cfg)
    assert pool.deployments(first) is pool.deployments(first)  # one breaker per direct name, kept across requests


# -- the other providers: `<provider>/<its upstream model>` through each one's fake upstream --------------

POLL = "providers: {fal: {poll_interval_s: 0.02}, replicate: {poll_interval_s: 0.02}, bfl: {poll_interval_s: 0.02}, " \
       "dashscope: {poll_interval_s: 0.02}, a1111: {progress_interval_s: 0.02}}\n"
OTHER_KEY = "sk-other-direct-SECRET-0a1b2c3d4e5f"


def _start(provider: str) -> tuple[FakeServer, dict[str, str]]:
    """The provider's fake upstream, and the environment that points the gateway at it."""
    if provider == "fal":
        fal = fake_fal.start(FalState(key=OTHER_KEY))
        return fal, {"FAL_KEY": OTHER_KEY, "FAL_BASE_URL": fal.url}
    if provider == "replicate":
        rep = fake_replicate.start(ReplicateState(token=OTHER_KEY))
        return rep, {"REPLICATE_API_TOKEN": OTHER_KEY, "REPLICATE_BASE_URL": rep.url}
    if provider == "bfl":
        bfl = fake_bfl.start(BflState(api_key=OTHER_KEY))
        return bfl, {"BFL_API_KEY": OTHER_KEY, "BFL_BASE_URL": bfl.url}
    if provider == "ark":
        ark = fake_ark.start(ArkState(api_key=OTHER_KEY))
        return ark, {"ARK_API_KEY": OTHER_KEY, "ARK_BASE_URL": ark.url + "/api/v3"}
    if provider == "dashscope":
        dash = fake_dashscope.start(DashScopeState(api_key=OTHER_KEY))
        return dash, {"DASHSCOPE_API_KEY": OTHER_KEY, "DASHSCOPE_BASE_URL": dash.url}
    assert provider == "a1111"
    sd = fake_a1111.start()
    return sd, {"A1111_BASE_URL": sd.url}


def _sent(up: FakeServer) -> list[Recorded]:
    return [r for r in up.state.requests if r.method == "POST"]


@pytest.mark.parametrize(("name", "path", "model_field"), [
    ("fal/fal-ai/flux/krea", "/fal-ai/flux/krea", None),
    ("replicate/ideogram-ai/ideogram-v3-turbo", "/v1/models/ideogram-ai/ideogram-v3-turbo/predictions", None),
    ("bfl/flux-2-pro", "/v1/flux-2-pro", None),
    ("ark/doubao-seedream-4-0-250828", "/api/v3/images/generations", "doubao-seedream-4-0-250828"),
    ("dashscope/wan2.2-t2i-flash", fake_dashscope.ASYNC, "wan2.2-t2i-flash"),
    ("a1111/sd_xl_base_1.0.safetensors", "/sdapi/v1/txt2img", None),
])
def test_provider_slash_model_reaches_that_provider_with_its_upstream_model(
        inprocess_gateway: InProcessFactory, name: str, path: str, model_field: str | None) -> None:
    provider = name.split("/", 1)[0]
    up, env = _start(provider)
    try:
        gw = inprocess_gateway(env, POLL)
        res = gw.openai().images.generate(model=name, prompt="a lighthouse at dusk", response_format="b64_json")
        assert res.data and res.data[0].b64_json
        sent = _sent(up)
        assert sent and sent[0].path == path  # the upstream model names the endpoint...
        if model_field is not None:  # ...or goes in the body's `model`
            assert sent[0].json["model"] == model_field
        if provider == "a1111":  # the upstream model of a direct a1111 name is the checkpoint
            assert sent[0].json["override_settings"] == {"sd_model_checkpoint": "sd_xl_base_1.0.safetensors"}
        gw.assert_secret_absent(OTHER_KEY)
    finally:
        up.stop()
