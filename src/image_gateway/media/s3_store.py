"""Hosted images in an S3-compatible bucket (IMAGE_STORE=s3), shared by every gateway process.

The client is obstore (Rust `object_store` underneath): every call is async and runs on its own
threads, so a save never blocks the event loop, and it signs with the standard AWS credential chain
(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an instance role...), which the gateway never
reads, logs or writes itself. S3_ENDPOINT_URL points it at MinIO, R2, Ceph...; an http:// endpoint
is allowed because such stores often sit on a private network. References:
https://developmentseed.org/obstore/latest/getting-started/ (S3Store), .../api/get (GetResult:
attributes, meta.last_modified, stream), .../api/put (attributes), .../api/list (prefix, offset).

Objects are `S3_PREFIX + name`, with their Content-Type and Cache-Control and no user metadata.
Expiry: an object older than IMAGE_TTL_S (by the bucket's Last-Modified) is never served, and the
sweep (media/sweeper.py, one process at a time when REDIS_URL is set) deletes it; a bucket lifecycle
rule on the prefix may do the same job. A bucket failure is a clear 503 (unreachable, 5xx) or 502
(access denied, no such bucket) that names neither the bucket's credentials nor its endpoint.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import NotFoundError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from ..errors import GatewayError, redact
from .store import CACHE_CONTROL, Hosted, content_type, new_name

if TYPE_CHECKING:
    from obstore.store import S3Config

log = logging.getLogger("image_gateway.images")

_NAME = re.compile(r"[A-Za-z0-9_-]{8,64}\.[a-z0-9]{2,5}")  # what new_name() makes; nothing else is looked up
_CHUNK = 256 * 1024
_CHECK_EVERY_S = 10.0  # /ready asks the bucket at most this often (load balancers probe every few seconds)


class ImageStoreUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "image_store_unavailable"

    def __init__(self) -> None:
        super().__init__("The gateway's image store (S3 bucket) cannot be reached now; retry shortly.",
                         retryable=True)


class ImageStoreRefused(GatewayError):
    status = 502
    type = "server_error"
    code = "image_store_error"

    def __init__(self) -> None:
        super().__init__("The gateway's image store (S3 bucket) refused the request (access denied or no such "
                         "bucket); the operator must check IMAGE_STORE/S3_* settings and credentials.")


def _env_secrets() -> list[str]:
    return [v for v in (os.environ.get("AWS_SECRET_ACCESS_KEY"), os.environ.get("AWS_SESSION_TOKEN")) if v]


def _failure(e: Exception, what: str) -> GatewayError:
    """The caller's error for a bucket failure; the log line gets the (scrubbed) reason."""
    refused = isinstance(e, (PermissionDeniedError, UnauthenticatedError, FileNotFoundError, NotFoundError))
    reason = redact(str(e).split("\n", 1)[0][:300], _env_secrets())
    log.warning("image store %s failed", what, extra={"error": type(e).__name__, "reason": reason})
    return ImageStoreRefused() if refused else ImageStoreUnavailable()


class S3ImageStore:
    shared = True  # every process sees the same bucket: one sweeps at a time

    def __init__(self, bucket: str, prefix: str, ttl_s: float, *, endpoint_url: str | None = None,
                 region: str | None = None, public_base: str | None = None) -> None:
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.ttl_s = ttl_s
        self.public_base = public_base
        self._max_age = int(min(3600.0, ttl_s))
        config: S3Config = {}
        if endpoint_url:
            config["endpoint"] = endpoint_url
        if region:
            config["region"] = region
        # Short timeouts and few retries: a caller waits for a save or a GET, so a dead bucket must be
        # a prompt 503, not obstore's default of ten retries over three minutes.
        self._s3 = S3Store(bucket, config=config,
                           client_options={"allow_http": True, "connect_timeout": timedelta(seconds=3),
                                           "timeout": timedelta(seconds=30)},
                           retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=10),
                                         "backoff": {"init_backoff": timedelta(milliseconds=50),
                                                     "max_backoff": timedelta(seconds=1)}})
        self._checked = (0.0, False)

    def ensure(self) -> None:
        return None  # the bucket is the operator's; /ready says whether it answers

    async def put(self, data: bytes, ext: str | None = None) -> str:
        name = new_name(data, ext)
        try:
            await obstore.put_async(self._s3, self.prefix + name, data, use_multipart=False,
                                    attributes={"Content-Type": content_type(name),
                                                "Cache-Control": f"public, max-age={self._max_age}, immutable"})
        except Exception as e:
            raise _failure(e, "save") from None
        return name

    async def open(self, name: str) -> Hosted | None:
        if _NAME.fullmatch(name) is None:
            return None
        try:
            got = await obstore.get_async(self._s3, self.prefix + name)
        except (FileNotFoundError, NotFoundError):
            return None
        except Exception as e:
            raise _failure(e, "read") from None
        meta = got.meta
        age = time.time() - meta["last_modified"].timestamp()
        if age > self.ttl_s:
            return None  # (the sweep deletes it)
        left = int(min(3600.0, self.ttl_s - age))
        ctype = got.attributes.get("Content-Type") or content_type(name)
        cache = f"public, max-age={left}, immutable" if left < 3600 else CACHE_CONTROL
        stream = got.stream(min_chunk_size=_CHUNK)
        try:  # the first chunk (all of most images) before the status line: a failure here is still a 503
            first = bytes(await stream.__anext__())
        except StopAsyncIteration:
            first = b""
        except Exception as e:
            raise _failure(e, "read") from None
        return Hosted(ctype, cache, chunks=_chunks(first, stream), size=meta["size"])

    async def sweep(self) -> int:
        cutoff = time.time() - self.ttl_s
        gone = 0
        try:
            async for batch in obstore.list(self._s3, self.prefix, chunk_size=1000):
                old = [m["path"] for m in batch if m["last_modified"].timestamp() < cutoff]
                if old:
                    await obstore.delete_async(self._s3, old)  # DeleteObjects, 1000 a request
                    gone += len(old)
        except Exception as e:
            raise _failure(e, "sweep") from None
        return gone

    async def check(self) -> bool:
        """Lists the prefix from past its last possible key: no object comes back, but a missing bucket,
        refused credentials or an unreachable endpoint still fail. Cached for a few seconds."""
        at, ok = self._checked
        if time.monotonic() - at < _CHECK_EVERY_S:
            return ok
        try:
            stream = obstore.list(self._s3, self.prefix, offset=self.prefix + "~", chunk_size=1)
            async for _ in stream:
                break
            ok = True
        except Exception as e:
            _failure(e, "check")
            ok = False
        self._checked = (time.monotonic(), ok)
        return ok

    async def close(self) -> None:
        return None


async def _chunks(first: bytes, stream: Any) -> AsyncIterator[bytes]:
    """The object's body for the response; a bucket failure mid-body ends the response early (the
    status line is sent by then), logged."""
    yield first
    try:
        async for chunk in stream:
            yield bytes(chunk)
    except Exception as e:
        _failure(e, "stream")
