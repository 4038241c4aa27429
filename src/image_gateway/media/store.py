"""Where the images the gateway hosts itself live: the interface, and the local directory behind it.

The gateway hosts an image when the caller asked for a URL but the upstream gave bytes (or a URL
that expires). `ImageStore` is what media/deliver.py saves into and what GET /images/<name> reads
from; LocalImageStore (here, DATA_DIR/images, the default) and S3ImageStore (media/s3_store.py, a
bucket every gateway process shares) implement it. Both drop what is older than IMAGE_TTL_S.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .convert import CONTENT_TYPES, sniff_format

CACHE_CONTROL = "public, max-age=3600, immutable"
# Images up to this size are written on the event loop: a small write to the page cache costs less
# than handing it to a thread and waking the loop again (under the default `both` every image is
# stored); larger ones go to a thread so the loop never waits on a big write.
INLINE_SAVE_MAX = 64 * 1024


def new_name(data: bytes, ext: str | None) -> str:
    """An unguessable public name with the image's extension."""
    return f"{secrets.token_urlsafe(18)}.{ext or sniff_format(data) or 'png'}"


def content_type(name: str) -> str:
    return CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")


@dataclass(slots=True)
class Hosted:
    """A hosted image found for GET /images/<name>: a local file, or a body streamed from a bucket."""

    content_type: str
    cache_control: str = CACHE_CONTROL
    path: Path | None = None
    chunks: AsyncIterator[bytes] | None = None
    size: int | None = None


class ImageStore(Protocol):
    # URLs of hosted images are `{public_base}/{name}` when set, else `{gateway origin}/images/{name}`.
    public_base: str | None
    # Whether several processes share this store (then one at a time sweeps it: media/sweeper.py).
    shared: bool
    ttl_s: float

    def ensure(self) -> None:
        """Called once at start-up, before the first save."""

    async def put(self, data: bytes, ext: str | None = None) -> str:
        """Store the bytes under a new unguessable name and return the name; never blocks the loop."""

    async def open(self, name: str) -> Hosted | None:
        """The image for a public name, or None when unknown, expired or not a plain name."""

    async def sweep(self) -> int:
        """Delete what is older than the TTL; returns how many went."""

    async def check(self) -> bool:
        """For /ready: whether the store can be used now."""

    async def close(self) -> None: ...


class LocalImageStore:
    public_base: str | None = None
    shared = False  # one directory per machine: every process sweeps its own

    def __init__(self, root: Path, ttl_s: float) -> None:
        self.root = root
        self.ttl_s = ttl_s

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def put(self, data: bytes, ext: str | None = None) -> str:
        if len(data) <= INLINE_SAVE_MAX:
            return self.save(data, ext)
        return await asyncio.to_thread(self.save, data, ext)

    def save(self, data: bytes, ext: str | None = None) -> str:
        """Write the bytes under an unguessable name (144 random bits); return that name.

        Written in place, not through a temporary file and a rename: nobody can ask for the name
        before it is returned, so no reader sees a half-written file, and O_EXCL makes the name
        this image's alone (one file creation instead of two: under the default `both` this runs
        for every image, and creating a file is most of its cost)."""
        name = new_name(data, ext)
        path = os.path.join(self.root, name)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # the folder was removed while the gateway runs: make it again
            self.ensure()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        return name

    async def open(self, name: str) -> Hosted | None:
        path = self.path(name)
        return None if path is None else Hosted(content_type(name), path=path)

    def path(self, name: str) -> Path | None:
        """The file for a public name, or None when unknown, expired or not a plain name."""
        if "/" in name or "\\" in name or "\0" in name or name.startswith("."):  # NUL: stat() raises ValueError
            return None
        p = self.root / name
        try:
            st = p.stat()
        except OSError:
            return None
        if time.time() - st.st_mtime > self.ttl_s:
            return None
        return p

    async def sweep(self) -> int:
        return await asyncio.to_thread(self.sweep_files)

    def sweep_files(self) -> int:
        """Delete expired files; returns how many went."""
        cutoff = time.time() - self.ttl_s
        gone = 0
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for e in entries:
            try:
                if e.is_file() and e.stat().st_mtime < cutoff:
                    os.unlink(e.path)
                    gone += 1
            except OSError:
                continue
        return gone

    async def check(self) -> bool:
        return True

    async def close(self) -> None:
        return None


async def read_hosted(store: ImageStore, name: str) -> bytes | None:
    """The bytes of a hosted image (an earlier answer's URL fed back as an edit input), or None when
    unknown or expired; whichever store holds it."""
    hosted = await store.open(name)
    if hosted is None:
        return None
    if hosted.path is not None:
        path = hosted.path
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:  # (swept between open and read)
            return None
    parts = [bytes(c) async for c in hosted.chunks] if hosted.chunks is not None else []
    return b"".join(parts)
