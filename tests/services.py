"""Real backing services for the scale-out tests: a `redis-server` and an S3-API server (moto), each
on a free port on 127.0.0.1, in a temporary folder, started and stopped by the test that needs them.

`make test` installs Debian's redis-server when it is missing; moto[server] comes from the test lock.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.gateway import free_port
from tests.waits import wait_until


def _answers(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """`redis-server` on 127.0.0.1:<port>, no persistence file outside `workdir`. stop()/start() keep the
    port, so a test can take Redis away and bring it back under a running gateway. With `password`, it
    requires AUTH (the URL carries it)."""

    def __init__(self, workdir: Path, password: str | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:  # (make test installs it; a bare `pytest` run outside make may not have it)
            raise RuntimeError("redis-server is not installed: run `make test` (it installs Debian's redis-server)")
        self.exe = exe
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "no", "--protected-mode", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: _answers(self.port), 10, what=f"redis-server on port {self.port}")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


class S3Server:
    """moto's S3-API server (`moto_server`) on 127.0.0.1:<port>, with `bucket` created. Credentials are
    moto's test values; `env` is what a gateway process needs to reach it."""

    access_key = "testing-access-key"
    secret_key = "testing-secret-key"

    def __init__(self, workdir: Path, bucket: str = "gateway-images", auth_after: int | None = None) -> None:
        """`auth_after`: moto checks signatures after that many requests (INITIAL_NO_AUTH_ACTION_COUNT),
        so every key but its own is refused (403 InvalidAccessKeyId) once the bucket exists."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.auth_after = auth_after
        self.port = free_port()
        self.bucket = bucket
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"IMAGE_STORE": "s3", "S3_BUCKET": self.bucket, "S3_ENDPOINT_URL": self.endpoint,
                "S3_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key}

    def start(self) -> S3Server:
        exe = Path(sys.executable).with_name("moto_server")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        if self.auth_after is not None:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.auth_after)
        log = open(self.workdir / "moto.log", "ab")
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: _answers(self.port), 20, what=f"moto_server on port {self.port}")
        # Bucket creation is plain S3 (PUT /bucket); moto accepts it unsigned.
        r = httpx.put(f"{self.endpoint}/{self.bucket}", timeout=10)
        assert r.status_code == 200, r.text
        return self

    def objects(self) -> list[str]:
        """Keys in the bucket (ListObjectsV2, unsigned: moto allows it), for leak scans and expiry checks."""
        r = httpx.get(f"{self.endpoint}/{self.bucket}", params={"list-type": "2"}, timeout=10)
        r.raise_for_status()

        return re.findall(r"<Key>([^<]+)</Key>", r.text)

    def get(self, key: str) -> bytes:
        return self.get_object(key)[0]

    def get_object(self, key: str) -> tuple[bytes, dict[str, str]]:
        """An object's bytes and attributes (Content-Type, Cache-Control, user metadata), read signed
        with moto's own key: objects the gateway put are private, so an unsigned GET is refused."""
        import obstore
        from obstore.store import S3Store

        store = S3Store(self.bucket, endpoint=self.endpoint, region="us-east-1", access_key_id=self.access_key,
                        secret_access_key=self.secret_key, client_options={"allow_http": True})
        got = obstore.get(store, key)
        return bytes(got.bytes()), dict(got.attributes)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
