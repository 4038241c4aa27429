"""Local image store: files the gateway hosts itself, served at /images/<name>, expired by TTL."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from pathlib import Path

from .convert import sniff_format


class LocalImageStore:
    def __init__(self, root: Path, ttl_s: float) -> None:
        self.root = root
        self.ttl_s = ttl_s

    def ensure(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def save(self, data: bytes, ext: str | None = None) -> str:
        """Write the bytes under an unguessable name (144 random bits); return that name.

        Written in place, not through a temporary file and a rename: nobody can ask for the name
        before it is returned, so no reader sees a half-written file, and O_EXCL makes the name
        this image's alone (one file creation instead of two: under the default `both` this runs
        for every image, and creating a file is most of its cost)."""
        ext = ext or sniff_format(data) or "png"
        name = f"{secrets.token_urlsafe(18)}.{ext}"
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

    def sweep(self) -> int:
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

    async def sweep_forever(self, every_s: float = 600.0) -> None:
        while True:
            await asyncio.to_thread(self.sweep)
            await asyncio.sleep(min(every_s, max(1.0, self.ttl_s / 4)))
