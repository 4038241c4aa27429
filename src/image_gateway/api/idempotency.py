"""Idempotency-Key: the same key and body within the TTL gets the same answer, never a second job.

All of it is HTTP-level (a header in, an answer replayed byte for byte), so it lives with the API
(api/idempotent.py is the request side); the app owns one store (app.py).

A running request is found in memory (a later request with its key waits for it, then answers
the same); a finished answer is kept in SQLite under DATA_DIR (`idempotency.sqlite3`) so a retry
after a restart, or on another worker process sharing the directory, is answered from there.
Only requests that carry the header pay for any of this; nothing of a key is stored (rows are
named by a hash of the caller's owner fingerprint, a keyed HMAC of its key, and the
Idempotency-Key), and one caller's rows are never another's.

Not covered here: two worker processes receiving the same key while the first is still running
each run it (the running map is per process). With REDIS_URL, api/idempotency_redis.py covers it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import msgspec

from ..errors import GatewayError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Stored:
    """An answer as it went out: enough to send it again byte for byte."""

    fingerprint: str
    status: int
    headers: dict[str, str]
    body: bytes


class IdempotencyConflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "idempotency_key_reused"


def key_id(caller: str, idempotency_key: str) -> str:
    return hashlib.sha256(f"{caller}\0{idempotency_key}".encode()).hexdigest()


_SCHEMA = """CREATE TABLE IF NOT EXISTS idempotency (
    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, headers BLOB NOT NULL,
    body BLOB NOT NULL, expires REAL NOT NULL)"""


class IdempotencyStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.running: dict[str, tuple[str, asyncio.Future[Stored]]] = {}
        self._db: sqlite3.Connection | None = None
        # One thread owns the connection: SQLite calls never block the event loop, never race.
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._next_purge = 0.0

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            self._db = db
        return self._db

    async def _io(self, fn: Callable[[], T]) -> T:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="idempotency")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def _load(self, kid: str) -> Stored | None:
        row = self._conn().execute("SELECT fingerprint, status, headers, body FROM idempotency "
                                   "WHERE id = ? AND expires > ?", (kid, time.time())).fetchone()
        if row is None:
            return None
        return Stored(row[0], int(row[1]), msgspec.json.decode(row[2]), bytes(row[3]))

    def _save(self, kid: str, s: Stored, ttl_s: float) -> None:
        db = self._conn()
        now = time.time()
        db.execute("INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?, ?, ?, ?)",
                   (kid, s.fingerprint, s.status, msgspec.json.encode(s.headers), s.body, now + ttl_s))
        if now >= self._next_purge:
            self._next_purge = now + 600
            db.execute("DELETE FROM idempotency WHERE expires <= ?", (now,))

    async def run(self, kid: str, fingerprint: str, ttl_s: float,
                  produce: Callable[[], Awaitable[Stored]], to_stored: Callable[[GatewayError], Stored],
                  ) -> tuple[Stored, str]:
        """The answer for this key, and how it was found: "new", "attached" or "replayed".

        `produce` runs the request (at most once per key and body). A failure where nothing can
        have been billed (GatewayError.retryable) is not remembered, so a retry runs again;
        any other failure is remembered like a success (`to_stored` renders it).
        """
        while True:
            how, joined = await join_running(self.running, kid, fingerprint)
            if how == "retry":
                continue
            if joined is not None:
                return joined, "attached"
            stored = await self._io(lambda: self._load(kid))
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise _conflict()
                return stored, "replayed"
            if kid not in self.running:
                break
        fut: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self.running[kid] = (fingerprint, fut)
        try:
            result = await produce()
        except GatewayError as e:
            if not e.retryable:
                failed = to_stored(e)
                await self._io(lambda: self._save(kid, failed, ttl_s))
                fut.set_result(failed)
            else:
                fut.set_exception(e)
                fut.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        except BaseException:
            fut.cancel()
            raise
        else:
            await self._io(lambda: self._save(kid, result, ttl_s))
            fut.set_result(result)
            return result, "new"
        finally:
            self.running.pop(kid, None)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


async def join_running(running: dict[str, tuple[str, asyncio.Future[Stored]]], kid: str,
                       fingerprint: str) -> tuple[str, Stored | None]:
    """("attached", the answer) of the request with this key already running in this process, once
    it has one (a different body: 409); ("none", None) when none runs; ("retry", None) when the one
    joined was cancelled (this request may take over). Both stores (SQLite, Redis) answer
    same-process repeats this way."""
    entry = running.get(kid)
    if entry is None:
        return "none", None
    if entry[0] != fingerprint:
        raise _conflict()
    try:
        return "attached", await asyncio.shield(entry[1])
    except asyncio.CancelledError:
        if not entry[1].cancelled():
            raise
        return "retry", None


def _conflict() -> IdempotencyConflict:
    return IdempotencyConflict("This Idempotency-Key was already used with a different request body. "
                               "Send a new key for a new request.", param="Idempotency-Key")
