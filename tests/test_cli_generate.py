"""`image-gateway generate` and `image-gateway tasks`: the real command, as a subprocess, against a real
gateway process (`--url`) and in-process on a local configuration."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from tests.conftest import GatewayFactory
from tests.gateway import GatewayProcess
from tests.upstreams import fake_openai
from tests.upstreams.base import FakeServer

CLI = str(Path(sys.executable).with_name("image-gateway"))
GATEWAY_KEY = "gw-cli-test-key-2468013579"
UPSTREAM_KEY = "sk-cli-upstream-13579024680"
ADMIN_KEY = "adm-cli-test-key-1122334455"


def run(*args: str, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed console script, with a clean environment (nothing from outside leaks in)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "DATA_DIR": str(cwd / "data"),
            "PYTHONUNBUFFERED": "1"}
    return subprocess.run([CLI, *args], cwd=cwd, env={**base, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def _image(path: Path) -> Image.Image:
    img = Image.open(path)
    img.load()
    return img


def _png(path: Path, color: tuple[int, ...]) -> Path:
    buf = io.BytesIO()
    Image.new("RGBA", (48, 48), color).save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    return path


def _gw(gateway: GatewayFactory, upstream: FakeServer, **env: str) -> GatewayProcess:
    return gateway({"GATEWAY_API_KEYS": GATEWAY_KEY, "OPENAI_API_KEY": UPSTREAM_KEY,
                    "OPENAI_BASE_URL": upstream.url + "/v1", **env}, config_yaml="router: {retries: 0}\n")


def test_generate_against_a_running_gateway_follows_partial_images(gateway: GatewayFactory,
                                                                   openai_upstream: FakeServer,
                                                                   tmp_path: Path) -> None:
    gw = _gw(gateway, openai_upstream)
    openai_upstream.state.stream_gap_s = 0.2
    out = tmp_path / "otter.png"
    r = run("generate", "--url", gw.url, "--key", GATEWAY_KEY, "--model", "gpt-image-1", "--prompt", "a sea otter",
            "--size", "64x64", "-o", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(out)]
    assert _image(out).format == "PNG" and _image(out).size == (64, 64)
    # The progress bar was fed by the stream's partial images (tqdm writes to stderr).
    assert "partial image 1" in r.stderr and "partial image 2" in r.stderr
    sent = fake_openai.last_request(openai_upstream.state).json
    assert sent["stream"] is True and sent["partial_images"] == 2 and sent["prompt"] == "a sea otter"
    # An edit with a mask: both files reach the upstream.
    src, mask = _png(tmp_path / "in.png", (200, 0, 0, 255)), _png(tmp_path / "m.png", (0, 0, 0, 0))
    r2 = run("generate", "--url", gw.url, "--key", GATEWAY_KEY, "--model", "gpt-image-1", "--prompt", "a hat",
             "--image", str(src), "--mask", str(mask), "--size", "64x64", "-o", str(tmp_path / "hat.png"),
             cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr
    rec = fake_openai.last_request(openai_upstream.state)
    assert rec.files["image"][0][2] == src.read_bytes() and rec.files["mask"][0][2] == mask.read_bytes()
    assert rec.form["prompt"] == ["a hat"] and _image(tmp_path / "hat.png").size == (64, 64)
    gw.assert_secret_absent(GATEWAY_KEY, UPSTREAM_KEY, extra_texts=[r.stdout, r.stderr, r2.stdout, r2.stderr])


def test_generate_in_process_on_the_local_configuration(tmp_path: Path) -> None:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("routes:\n  - name: sketch\n    provider: demo\n    upstream_model: demo\n")
    env = {"GATEWAY_CONFIG": str(cfg), "GATEWAY_API_KEYS": GATEWAY_KEY}  # its own key: used in-process
    r = run("generate", "--model", "sketch", "--prompt", "two foxes", "--size", "96x64", "--n", "2", "-o", "out/",
            cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    paths = [Path(p) for p in r.stdout.splitlines()]
    assert paths == [Path("out/two-foxes-1.png"), Path("out/two-foxes-2.png")]
    first, second = (_image(tmp_path / p) for p in paths)
    assert first.size == second.size == (96, 64) and first.tobytes() != second.tobytes()
    assert "received" in r.stderr  # the bar ran (the demo streams no previews)
    # An edit, in-process too: --image goes to /v1/images/edits.
    src = _png(tmp_path / "in.png", (0, 120, 255, 255))
    r = run("generate", "--model", "demo", "--prompt", "add a hat", "--image", str(src), "--size", "32x32",
            "-o", "edited.png", cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "edited.png" and _image(tmp_path / "edited.png").size == (32, 32)
    # In-process mode keeps to a temporary data directory: the local one is left untouched.
    assert not (tmp_path / "data").exists()
    assert GATEWAY_KEY not in r.stdout + r.stderr


def test_generate_failures_exit_non_zero_with_the_message(gateway: GatewayFactory, openai_upstream: FakeServer,
                                                         tmp_path: Path) -> None:
    gw = _gw(gateway, openai_upstream)
    bad = "gw-wrong-key-000000000"
    r = run("generate", "--url", gw.url, "--key", bad, "--model", "demo", "--prompt", "x", "-o", "x.png",
            cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip().endswith("error: Invalid gateway key. (invalid_api_key, HTTP 401)")
    assert not (tmp_path / "x.png").exists() and r.stdout == ""
    # Unknown model, in-process.
    r = run("generate", "--model", "no-such-model", "--prompt", "x", cwd=tmp_path)
    assert r.returncode == 1 and "(model_not_found, HTTP 404)" in r.stderr and "error: " in r.stderr
    # The upstream fails mid-way: its error reaches the command.
    openai_upstream.state.fail_next(fake_openai.server_error())
    r = run("generate", "--url", gw.url, "--key", GATEWAY_KEY, "--model", "gpt-image-1", "--prompt", "x",
            cwd=tmp_path)
    assert r.returncode == 1 and "error: The server had an error while processing your request" in r.stderr
    # Nothing listening.
    r = run("generate", "--url", "http://127.0.0.1:9", "--model", "demo", "--prompt", "x", cwd=tmp_path)
    assert r.returncode == 1 and "error: cannot reach http://127.0.0.1:9" in r.stderr
    r = run("generate", "--model", "demo", "--prompt", "x", "--image", "missing.png", cwd=tmp_path)
    assert r.returncode == 1 and "error: no such file: missing.png" in r.stderr
    gw.assert_secret_absent(GATEWAY_KEY, UPSTREAM_KEY, bad, extra_texts=[r.stdout, r.stderr])


def test_task_mode_and_the_tasks_commands(gateway: GatewayFactory, openai_upstream: FakeServer,
                                          tmp_path: Path) -> None:
    gw = _gw(gateway, openai_upstream, ADMIN_API_KEY=ADMIN_KEY)
    remote = ["--url", gw.url, "--key", GATEWAY_KEY]
    r = run("generate", *remote, "--model", "demo", "--prompt", "a task fox", "--size", "32x32", "--task",
            "-o", str(tmp_path / "t.png"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    task_id = next(line.split()[1] for line in r.stderr.splitlines() if line.startswith("task "))
    assert _image(tmp_path / "t.png").size == (32, 32)

    # A slow one to cancel: the fake upstream holds its answer.
    openai_upstream.state.delay_s = 30
    resp = httpx.post(gw.base_url + "/images/generations", headers={"Authorization": f"Bearer {GATEWAY_KEY}",
                      "Prefer": "respond-async"}, json={"model": "gpt-image-1", "prompt": "slow"}, timeout=10)
    assert resp.status_code == 202
    slow = resp.json()["id"]
    deadline = time.monotonic() + 10
    while openai_upstream.state.count("/v1/images") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)

    r = run("tasks", "list", "--url", gw.url, "--admin-key", ADMIN_KEY, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "PROGRESS", "MODEL", "CREATED"]
    rows = {line.split()[0]: line.split()[1] for line in lines[1:]}
    assert rows == {slow: rows[slow], task_id: "succeeded"} and rows[slow] in ("queued", "in_progress")
    r = run("tasks", "list", "--url", gw.url, cwd=tmp_path)
    assert r.returncode == 1 and "admin key" in r.stderr

    r = run("tasks", "show", *remote, task_id, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["status"] == "succeeded" and shown["result"]["data"][0]["b64_json"]
    r = run("tasks", "cancel", *remote, slow, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["status"] == "cancelled"
    r = run("tasks", "cancel", *remote, task_id, cwd=tmp_path)
    assert r.returncode == 1 and "(task_not_cancellable, HTTP 409)" in r.stderr
    r = run("tasks", "show", *remote, "imgtask_nope", cwd=tmp_path)
    assert r.returncode == 1 and "(task_not_found, HTTP 404)" in r.stderr

    # Without --url: the local configuration's task store (here, the gateway's data directory).
    local = {"DATA_DIR": str(gw.data_dir)}
    gw.stop()
    r = run("tasks", "list", "--status", "cancelled", cwd=tmp_path, env=local)
    assert r.returncode == 0 and slow in r.stdout and task_id not in r.stdout
    r = run("tasks", "show", task_id, cwd=tmp_path, env=local)
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == task_id
    gw.assert_secret_absent(GATEWAY_KEY, UPSTREAM_KEY, ADMIN_KEY, extra_texts=[r.stdout, r.stderr])
