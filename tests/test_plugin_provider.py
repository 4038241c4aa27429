"""Provider plugins and typed options: a provider class from outside the package, loaded by the
configuration, serves a route like a built-in one; route and provider options are checked when the
configuration loads (`check-config` names the file, the route or provider, and the key)."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest
from PIL import Image

from image_gateway.core.types import CallContext, ImageRequest
from tests.conftest import GatewayFactory

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "custom_provider"
PLUGIN_YAML = 'providers: {echo: {class: "echo_provider:EchoProvider"}}\nroutes: [{name: echo, provider: echo}]\n'
GW_KEY = "gw-plugin-SECRET-5e1f0a7c"


def test_example_provider_loads_from_outside_and_serves_an_image(gateway: GatewayFactory) -> None:
    gw = gateway(env={"PYTHONPATH": str(EXAMPLE), "GATEWAY_API_KEY": GW_KEY}, config_yaml=PLUGIN_YAML)
    client = openai.OpenAI(base_url=gw.base_url, api_key=GW_KEY, max_retries=0)
    res = client.images.generate(model="echo", prompt="hello plugin", size="256x128", n=2)
    assert res.data is not None and len(res.data) == 2
    b64 = res.data[0].b64_json
    assert b64 is not None
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert img.format == "PNG" and img.size == (256, 128)
    assert img.convert("RGB").getpixel((255, 127)) == (32, 32, 32)  # the option's default background
    lo, hi = img.convert("L").getextrema()
    assert isinstance(lo, int) and isinstance(hi, int) and hi > lo  # the prompt is drawn on it
    # Its capabilities are enforced like a built-in's: max_n=4, no edits.
    with pytest.raises(openai.BadRequestError) as e:
        client.images.generate(model="echo", prompt="too many", n=5)
    assert e.value.status_code == 400 and "at most 4" in str(e.value)
    models = {m.id for m in client.models.list()}
    assert "echo" in models
    gw.remember(res, str(e.value))
    gw.assert_secret_absent(GW_KEY)


async def test_the_example_reads_its_typed_route_option() -> None:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from echo_provider import EchoProvider
    finally:
        sys.path.remove(str(EXAMPLE))
    p = EchoProvider(SimpleNamespace(name="echo", base_url="local://echo", api_key=None, timeout_s=1.0, options={}))
    res = await p.generate(ImageRequest("generate", "blue", "echo", size="64x64"),
                           CallContext("echo", None, {"background": "#0000ff", "retries": 1}))
    assert res.images[0].b64 is not None
    assert Image.open(io.BytesIO(base64.b64decode(res.images[0].b64))).convert("RGB").getpixel((63, 63)) == (0, 0, 255)


def check_config(tmp_path: Path, yaml: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml)
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "GATEWAY_CONFIG": str(cfg)}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "image_gateway", "check-config"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("yaml", "names"), [
    # a typo in a generic route option
    ("routes:\n  - {name: mj-slow, provider: midjourney, retires: 2}\n", ["route mj-slow", "'retires'", "retries"]),
    # a provider-specific option with the wrong type (would have failed only at request time)
    ("providers:\n  midjourney: {concurrency: three}\n", ["providers.midjourney", "concurrency", "'three'"]),
    ("routes:\n  - {name: fast, provider: zimage, steps: many}\n", ["route fast", "steps", "'many'"]),
    ("routes:\n  - {name: g, provider: grsai, options: {mode: push}}\n", ["route g", "mode", "'push'"]),
    ("routes:\n  - name: o\n    provider: openai\n    deployments: [{base_url: 'http://127.0.0.1:9', nativ: 1}]\n",
     ["route o", "'nativ'"]),
])
def test_check_config_rejects_unknown_and_mistyped_options(tmp_path: Path, yaml: str, names: list[str]) -> None:
    out = check_config(tmp_path, yaml)
    assert out.returncode == 2, out.stdout
    assert "gateway.yaml" in out.stderr  # the file
    for n in names:
        assert n in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_check_config_accepts_typed_strings_and_normalises_them(tmp_path: Path) -> None:
    """YAML / ${VAR} strings that mean the type are converted (bool("false") is not True any more)."""
    out = check_config(tmp_path, "providers:\n  midjourney: {concurrency: '5', upscale: 'false'}\n"
                                 "routes:\n  - {name: banana-direct, provider: grsai, upstream_model: nano-banana,"
                                 " rehost: 'false', retry_on_timeout: 'yes'}\n")
    assert out.returncode == 0, out.stderr
    assert '"concurrency": 5' in out.stdout and '"upscale": false' in out.stdout
    assert '"rehost": false' in out.stdout and '"retry_on_timeout": true' in out.stdout


@pytest.mark.parametrize(("spec", "why"), [
    ("no_such_module:Thing", "cannot import module 'no_such_module'"),
    ("echo_provider:draw", "is not a provider class"),
    ("echo_provider", "must be \"module.path:ClassName\""),
])
def test_a_plugin_that_cannot_load_is_a_config_error(tmp_path: Path, spec: str, why: str) -> None:
    out = check_config(tmp_path, f'providers: {{echo: {{class: "{spec}"}}}}\n', EXAMPLE)
    assert out.returncode == 2 and "providers.echo.class" in out.stderr and why in out.stderr, out.stderr


def test_a_plugin_option_is_checked_too(tmp_path: Path) -> None:
    out = check_config(tmp_path, 'providers: {echo: {class: "echo_provider:EchoProvider", colour: red}}\n', EXAMPLE)
    assert out.returncode == 2 and "providers.echo" in out.stderr and "'colour'" in out.stderr, out.stderr
    ok = check_config(tmp_path, PLUGIN_YAML, EXAMPLE)
    assert ok.returncode == 0 and '"echo"' in ok.stdout, ok.stderr
