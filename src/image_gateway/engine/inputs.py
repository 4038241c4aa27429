"""Input images of accepted tasks that are not sent upstream yet, kept where a restart finds them.

An async edit is answered 202 before its provider has the images (it may wait for an account
slot); so they are written to `DATA_DIR/task_inputs/<task id>/<n>` (files 0600, in a 0700
directory) before the 202, read back if the task must be submitted after a restart, and deleted
once the upstream accepted the task or it ended. A store without a directory keeps them in memory.
With tasks shared between processes (REDIS_URL) they are kept in Redis instead (engine/redis_inputs.py).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol


class InputStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root
        self._memory: dict[str, list[bytes]] = {}

    async def put(self, task_id: str, blobs: Sequence[bytes], deadline_at: float | None = None) -> None:
        if self.root is None:
            self._memory[task_id] = list(blobs)
        else:
            await asyncio.to_thread(self._write, task_id, list(blobs))

    async def get(self, task_id: str, count: int) -> list[bytes]:
        if self.root is None:
            return self._memory[task_id][:count]
        return await asyncio.to_thread(self._read, task_id, count)

    async def drop(self, task_id: str) -> None:
        if self.root is None:
            self._memory.pop(task_id, None)
        else:
            await asyncio.to_thread(shutil.rmtree, self.root / task_id, True)

    async def sweep(self, keep: set[str]) -> None:
        """Delete the inputs of every task not in `keep` (those that ended while the process was down)."""
        if self.root is None:
            for k in set(self._memory) - keep:
                del self._memory[k]
            return
        root = self.root

        def run() -> None:
            if root.is_dir():
                for d in root.iterdir():
                    if d.name not in keep:
                        shutil.rmtree(d, True)

        await asyncio.to_thread(run)

    def _write(self, task_id: str, blobs: list[bytes]) -> None:
        assert self.root is not None
        d = self.root / task_id
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        for i, blob in enumerate(blobs):
            fd = os.open(d / str(i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(blob)

    def _read(self, task_id: str, count: int) -> list[bytes]:
        assert self.root is not None
        return [(self.root / task_id / str(i)).read_bytes() for i in range(count)]


class TaskInputs(Protocol):
    """Where a queued task's input images are kept: this directory (InputStore) or, with tasks shared
    between processes, Redis (engine/redis_inputs.py)."""

    async def put(self, task_id: str, blobs: Sequence[bytes], deadline_at: float | None = None) -> None:
        """Before the task's 202; kept at least until `deadline_at` (unix seconds) where they can expire."""
        ...

    async def get(self, task_id: str, count: int) -> list[bytes]: ...

    async def drop(self, task_id: str) -> None: ...

    async def sweep(self, keep: set[str]) -> None: ...
