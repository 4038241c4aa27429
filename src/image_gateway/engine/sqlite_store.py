"""The embedded TaskStore: one SQLite file under DATA_DIR, WAL mode, used from a worker thread.

The event loop never touches the file: every call runs in `asyncio.to_thread` on one connection
guarded by a lock. Writes are batched by the engine (one transaction per poll round).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from .store import TERMINAL, TaskRecord

_COLUMNS = ("id", "model", "route", "status", "created", "updated", "key_source", "provider", "endpoint",
            "progress", "handle", "delivery", "result", "error", "webhook_url", "webhook_status", "deadline_at",
            "owner", "key_fp", "request", "submit")
_JSON = frozenset({"handle", "delivery", "result", "error", "request"})
# Columns added after the first release: a database from before gets them on open.
_ADDED = {"owner": "TEXT", "key_fp": "TEXT", "request": "TEXT", "submit": "TEXT"}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    key_source TEXT NOT NULL,
    provider TEXT,
    endpoint TEXT,
    progress INTEGER NOT NULL DEFAULT 0,
    handle TEXT,
    delivery TEXT,
    result TEXT,
    error TEXT,
    webhook_url TEXT,
    webhook_status TEXT,
    deadline_at REAL,
    owner TEXT,
    key_fp TEXT,
    request TEXT,
    submit TEXT
);
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status);
CREATE INDEX IF NOT EXISTS tasks_updated ON tasks (updated);
"""
_UPSERT = (f"INSERT INTO tasks ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))}) "
           f"ON CONFLICT(id) DO UPDATE SET {', '.join(f'{c}=excluded.{c}' for c in _COLUMNS[1:])}")
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM tasks"
_TERMINAL = tuple(sorted(TERMINAL))
_IN_TERMINAL = f"({', '.join('?' * len(_TERMINAL))})"


def _row(rec: TaskRecord) -> tuple[Any, ...]:
    out = []
    for c in _COLUMNS:
        v = getattr(rec, c)
        out.append(msgspec.json.encode(v).decode() if c in _JSON and v is not None else v)
    return tuple(out)


def _record(row: Sequence[Any]) -> TaskRecord:
    kw: dict[str, Any] = {}
    for c, v in zip(_COLUMNS, row, strict=True):
        kw[c] = msgspec.json.decode(v) if c in _JSON and v is not None else v
    if kw["delivery"] is None:
        kw["delivery"] = {}
    return TaskRecord(**kw)


class SqliteTaskStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(_SCHEMA)
        have = {row[1] for row in conn.execute("PRAGMA table_info(tasks)")}
        for column, kind in _ADDED.items():
            if column not in have:
                conn.execute(f"ALTER TABLE tasks ADD COLUMN {column} {kind}")
        self._conn = conn

    def _call(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            if self._conn is None:
                raise RuntimeError("task store is closed")
            return self._conn.execute(sql, args).fetchall()

    def _save(self, records: Sequence[TaskRecord]) -> None:
        rows = [_row(r) for r in records]
        with self._lock:
            conn = self._conn
            if conn is None:
                raise RuntimeError("task store is closed")
            conn.execute("BEGIN")
            try:
                conn.executemany(_UPSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    async def save(self, records: Sequence[TaskRecord]) -> None:
        if records:
            await asyncio.to_thread(self._save, list(records))

    async def get(self, task_id: str) -> TaskRecord | None:
        rows = await asyncio.to_thread(self._call, f"{_SELECT} WHERE id = ?", (task_id,))
        return _record(rows[0]) if rows else None

    async def unfinished(self) -> list[TaskRecord]:
        rows = await asyncio.to_thread(self._call, f"{_SELECT} WHERE status NOT IN {_IN_TERMINAL}", _TERMINAL)
        return [_record(r) for r in rows]

    async def undelivered(self) -> list[TaskRecord]:
        rows = await asyncio.to_thread(
            self._call, f"{_SELECT} WHERE webhook_status = 'pending' AND status IN {_IN_TERMINAL}", _TERMINAL)
        return [_record(r) for r in rows]

    async def sweep(self, older_than: float) -> int:
        def run() -> int:
            with self._lock:
                if self._conn is None:
                    return 0
                cur = self._conn.execute(f"DELETE FROM tasks WHERE updated < ? AND status IN {_IN_TERMINAL}",
                                         (older_than, *_TERMINAL))
                return cur.rowcount

        return await asyncio.to_thread(run)

    async def recent(self, limit: int, status: str | None = None) -> list[TaskRecord]:
        where, args = ("WHERE status = ? ", (status, limit)) if status else ("", (limit,))
        rows = await asyncio.to_thread(self._call, f"{_SELECT} {where}ORDER BY created DESC LIMIT ?", args)
        return [_record(r) for r in rows]
