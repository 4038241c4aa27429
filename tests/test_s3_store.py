"""IMAGE_STORE=s3 against a real S3-API server (moto) on 127.0.0.1: a hosted image saved by one gateway
process is served by another from the bucket, expires, is swept (by one process at a time under a
Redis lock), and a bucket that is down or refuses the gateway is a clear 503/502, never a 500. The
bucket's secret key is in no log, response or object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import redis

from tests.conftest import GatewayFactory
from tests.services import S3Server
from tests.waits import wait_until

GEN = {"model": "demo", "prompt": "a red fox", "size": "32x32", "response_format": "url"}
OPERATOR = "sk-admin-s3-test-key-0123456789"
SECRET = "gw-s3-secret-0123456789abcdef"  # an AWS secret key the bucket does not know


def _generate(gw: Any) -> httpx.Response:
    r = httpx.post(gw.base_url + "/images/generations", json=GEN, timeout=30)
    gw.remember(r.text, str(r.headers))
    return r


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _assert_no_secret(s3: S3Server, *gws: Any) -> None:
    for gw in gws:
        gw.assert_secret_absent(s3.secret_key)
    for key in s3.objects():  # no object, and no object's attributes (no user metadata at all), carries it
        data, attributes = s3.get_object(key)
        assert s3.secret_key.encode() not in data
        assert set(attributes) <= {"Content-Type", "Cache-Control"}, attributes
        assert all(s3.secret_key not in v for v in attributes.values())


def test_a_url_from_process_a_is_served_by_process_c_from_the_bucket(gateway: GatewayFactory,
                                                                      s3_server: S3Server) -> None:
    a = gateway(s3_server.env)
    c = gateway(s3_server.env)
    r = _generate(a)
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    assert url.startswith(a.url + "/images/")  # the gateway's own origin: no S3_PUBLIC_BASE_URL
    name = _name(url)
    assert len(name.split(".")[0]) >= 24 and name.endswith(".png")  # unguessable
    assert s3_server.objects() == [f"images/{name}"]
    assert not (a.data_dir / "images").exists() or not any((a.data_dir / "images").iterdir())

    got = httpx.get(f"{c.url}/images/{name}", timeout=10)  # process C never saw the request
    assert got.status_code == 200
    assert got.headers["content-type"] == "image/png"
    assert got.content == s3_server.get(f"images/{name}") and got.content.startswith(b"\x89PNG")
    assert "max-age=" in got.headers["cache-control"] and "public" in got.headers["cache-control"]
    assert int(got.headers["content-length"]) == len(got.content)
    assert httpx.get(url, timeout=10).content == got.content  # and A serves it too

    for bad in ("AAAAAAAAAAAAAAAAAAAAAAAA.png", "..%2Fgateway.log", "images%2F" + name, "x.png"):
        miss = httpx.get(f"{c.url}/images/{bad}", timeout=10)
        assert miss.status_code == 404, bad
        assert miss.json()["error"]["code"] in ("image_not_found", "not_found")  # (a "/" never reaches the route)
        c.remember(miss.text)
    c.remember(got.headers)
    _assert_no_secret(s3_server, a, c)


def test_s3_public_base_url_and_prefix_shape_the_url(gateway: GatewayFactory, s3_server: S3Server) -> None:
    gw = gateway({**s3_server.env, "S3_PUBLIC_BASE_URL": "https://cdn.example.test/hosted/", "S3_PREFIX": "hosted"})
    r = _generate(gw)
    assert r.status_code == 200, r.text
    url = r.json()["data"][0]["url"]
    name = _name(url)
    assert url == f"https://cdn.example.test/hosted/{name}"
    assert s3_server.objects() == [f"hosted/{name}"]
    _, attributes = s3_server.get_object(f"hosted/{name}")
    assert attributes["Content-Type"] == "image/png"  # what a CDN in front of the bucket passes on
    assert "max-age=" in attributes["Cache-Control"]
    assert httpx.get(f"{gw.url}/images/{name}", timeout=10).status_code == 200  # the gateway still serves it
    _assert_no_secret(s3_server, gw)


def test_objects_expire_then_404_and_one_process_sweeps_them(gateway: GatewayFactory, s3_server: S3Server,
                                                             redis_server: Any) -> None:
    env = {**s3_server.env, "IMAGE_TTL_S": "4", "REDIS_URL": redis_server.url}
    a = gateway(env)
    c = gateway(env)
    r = _generate(a)
    assert r.status_code == 200, r.text
    name = _name(r.json()["data"][0]["url"])
    assert httpx.get(f"{c.url}/images/{name}", timeout=10).status_code == 200

    def expired() -> bool:
        got = httpx.get(f"{c.url}/images/{name}", timeout=10)
        return got.status_code == 404 and got.json()["error"]["code"] == "image_not_found"

    wait_until(expired, timeout=20, interval=0.2, what="the expired image to 404")
    wait_until(lambda: s3_server.objects() == [], timeout=20, interval=0.2, what="the sweep to delete the object")
    sweeping = [gw for gw in (a, c) if "expired hosted images deleted" in gw.logs()]
    assert len(sweeping) == 1, "exactly one process holds the sweep lock"
    holder = redis.Redis.from_url(redis_server.url, decode_responses=True).get("image_gateway:images:sweep")
    assert isinstance(holder, str) and holder.startswith(sweeping[0].env["GATEWAY_INSTANCE"] + ":")
    _assert_no_secret(s3_server, a, c)


def test_bucket_down_is_a_clear_503_and_recovers(gateway: GatewayFactory, s3_server: S3Server) -> None:
    gw = gateway({**s3_server.env, "ADMIN_API_KEY": OPERATOR})
    assert _generate(gw).status_code == 200
    ready = httpx.get(gw.url + "/ready", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10)
    assert ready.status_code == 200 and ready.json()["image_store"] == {"kind": "s3", "ok": True}
    s3_server.stop()

    r = _generate(gw)
    assert r.status_code == 503, r.text
    err = r.json()["error"]
    assert err["code"] == "image_store_unavailable" and err["type"] == "server_error"
    assert "127.0.0.1" not in err["message"] and s3_server.bucket not in err["message"]
    got = httpx.get(gw.url + "/images/AAAAAAAAAAAAAAAAAAAAAAAA.png", timeout=10)
    assert got.status_code == 503 and got.json()["error"]["code"] == "image_store_unavailable"
    b64 = httpx.post(gw.base_url + "/images/generations", json={**GEN, "response_format": "b64_json"}, timeout=30)
    assert b64.status_code == 200  # what needs no bucket still works
    gw.remember(r.text, got.text)
    # /ready caches the bucket's answer for a few seconds; it turns false without a restart.
    wait_until(lambda: httpx.get(gw.url + "/ready", timeout=10).status_code == 503, timeout=20, interval=0.5,
               what="/ready to report the bucket down")
    ready = httpx.get(gw.url + "/ready", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10)
    assert ready.json()["image_store"] == {"kind": "s3", "ok": False}

    s3_server.start()  # same port, a fresh bucket: the gateway needs no restart
    again = _generate(gw)
    assert again.status_code == 200, again.text
    assert s3_server.objects() == [f"images/{_name(again.json()['data'][0]['url'])}"]
    assert "Traceback" not in gw.logs()
    _assert_no_secret(s3_server, gw)


def test_a_bucket_that_refuses_the_gateway_is_a_502_without_credentials(gateway: GatewayFactory,
                                                                         tmp_path: Path) -> None:
    s3 = S3Server(tmp_path / "s3auth", auth_after=1).start()  # the bucket creation is the one unsigned request
    try:
        env = {**s3.env, "AWS_ACCESS_KEY_ID": "AKIAGATEWAYUNKNOWN01", "AWS_SECRET_ACCESS_KEY": SECRET}
        gw = gateway(env)
        r = _generate(gw)
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == "image_store_error" and "denied" in err["message"]
        miss = httpx.get(gw.url + "/images/AAAAAAAAAAAAAAAAAAAAAAAA.png", timeout=10)
        assert miss.status_code == 502
        assert httpx.get(gw.url + "/ready", timeout=10).status_code == 503
        gw.remember(r.text, miss.text)
        assert "Traceback" not in gw.logs()
        gw.assert_secret_absent(SECRET)
    finally:
        s3.stop()


def test_a_missing_bucket_is_a_502(gateway: GatewayFactory, s3_server: S3Server) -> None:
    gw = gateway({**s3_server.env, "S3_BUCKET": "no-such-bucket"})
    r = _generate(gw)
    assert r.status_code == 502 and r.json()["error"]["code"] == "image_store_error", r.text
    assert httpx.get(gw.url + "/ready", timeout=10).status_code == 503
