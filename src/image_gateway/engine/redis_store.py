"""The shared TaskStore (REDIS_URL): task records in Redis, each under the poll lease of one process.

Every write of a record is fenced: it lands only while the writer holds the task's lease (its token
is in `held`), so a process that lost its lease (it stalled past TASK_LEASE_S and another took the
task over) cannot write a stale result; a refused write is reported through `on_lost`. A new task's
first write creates its lease in the same script. A finished task keeps its lease until its webhook
is settled, so exactly one process delivers it. Scripts and key layout: engine/redis_scripts.py.
Records are JSON without any key, as in SQLite. Redis trouble raises StateUnavailable (503); a write
that failed that way is kept and written again by `retry` once Redis answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from ..state.redis import FLEET_CLIENT_NAME, connect, guarded
from . import redis_scripts as lua
from .store import TERMINAL, TaskRecord

log = logging.getLogger("image_gateway.engine")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(TaskRecord).decode
SWEEP_BATCH = 500


def _num(v: float | int | None) -> str:
    return repr(float(v or 0.0))


class RedisTaskStore:
    def __init__(self, url: str, lease_s: float, instance: str, prefix: str = "ig:") -> None:
        self.url = url
        self.lease_ms = max(1, int(lease_s * 1000))
        self.instance = instance
        self.p = prefix
        self.client: Any = None
        self.held: dict[str, str] = {}  # task id -> our fencing token, for every lease this process holds
        self.instances = 1  # processes sharing the work (heartbeats), from the last renewal
        self.on_lost: Callable[[list[str]], None] = lambda ids: None
        self.on_resaved: Callable[[TaskRecord], None] = lambda rec: None
        self._retry: dict[str, TaskRecord] = {}
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        if self.client is None:
            self.client = connect(self.url, FLEET_CLIENT_NAME)
            for name in ("SAVE", "RENEW", "CLAIM", "RELEASE", "PROGRESS", "SWEEP"):
                self._scripts[name] = self.client.register_script(getattr(lua, name))

    async def close(self) -> None:
        if self.client is None:
            return
        try:
            await self.release()
        except Exception as e:  # (Redis away: the leases expire by themselves)
            log.info("releasing task leases failed", extra={"error": type(e).__name__})
        await self.client.aclose()
        self.client = None

    async def _run(self, name: str, args: Sequence[Any], what: str = "tasks") -> Any:
        async with guarded(what):
            return await self._scripts[name](args=[self.p, *args])

    # -- the TaskStore protocol -----------------------------------------------------------------------

    async def save(self, records: Sequence[TaskRecord]) -> None:
        await self._save(records)

    async def _save(self, records: Sequence[TaskRecord], retrying: bool = False) -> set[str]:
        """Write; returns the ids written (not refused, not overtaken)."""
        if not records:
            return set()
        latest = {r.id: r for r in records}  # one write per task: its newest record
        args: list[Any] = [self.lease_ms]
        for r in latest.values():
            flags = ("t" if r.status in TERMINAL else "") + \
                ("r" if r.status in TERMINAL and r.webhook_status != "pending" else "")
            args += [r.id, self.held.get(r.id, ""), _encode(r), r.status, str(int(r.progress)), _num(r.created),
                     _num(r.updated), flags]
        try:
            tokens = await self._run("SAVE", args)
        except Exception:
            for task_id, r in latest.items():  # (a retry never displaces a newer failed write)
                if not retrying or task_id not in self._retry:
                    self._retry[task_id] = r
            raise
        lost = []
        written = set()
        for (task_id, r), token in zip(latest.items(), tokens, strict=True):
            if not retrying:
                self._retry.pop(task_id, None)  # (anything left there is older)
            token = token.decode() if isinstance(token, bytes) else str(token)
            if token == "-":
                continue  # overtaken by a newer write of ours
            written.add(task_id)
            if not token:
                if self.held.pop(task_id, None) is not None:
                    lost.append(task_id)
                continue
            if r.status in TERMINAL and r.webhook_status != "pending":
                self.held.pop(task_id, None)
            else:
                self.held[task_id] = token
        if lost:
            log.warning("task lease lost; another process polls these tasks now", extra={"tasks": len(lost)})
            self.on_lost(lost)
        return written

    async def retry(self) -> None:
        """Write again what failed to be written while Redis was away."""
        if self._retry:
            recs = list(self._retry.values())
            self._retry.clear()
            written = await self._save(recs, retrying=True)
            for r in recs:
                if r.id in written and r.status in TERMINAL and r.webhook_status == "pending" and r.id in self.held:
                    self.on_resaved(r)

    def forget(self, task_id: str) -> None:
        """A task that was never stored (its 202 was refused): nothing to write again."""
        self._retry.pop(task_id, None)

    def holds(self, task_id: str) -> bool:
        return task_id in self.held

    async def get(self, task_id: str) -> TaskRecord | None:
        async with guarded("the task"):
            raw, pct, status = await self.client.hmget(f"{self.p}t:{task_id}", "r", "p", "s")
        return _live(raw, pct, status)

    async def _records(self, ids: Sequence[Any]) -> list[TaskRecord]:
        async with guarded("tasks"):
            pipe = self.client.pipeline(transaction=False)
            for i in ids:
                pipe.hmget(f"{self.p}t:{i.decode() if isinstance(i, bytes) else i}", "r", "p", "s")
            rows = await pipe.execute()
        return [rec for rec in (_live(*row) for row in rows) if rec is not None]

    async def _live_ids(self) -> list[Any]:
        async with guarded("tasks"):
            return list(await self.client.zrange(f"{self.p}live", 0, -1))

    async def unfinished(self) -> list[TaskRecord]:
        return [r for r in await self._records(await self._live_ids()) if r.status not in TERMINAL]

    async def undelivered(self) -> list[TaskRecord]:
        return [r for r in await self._records(await self._live_ids())
                if r.status in TERMINAL and r.webhook_status == "pending"]

    async def sweep(self, older_than: float) -> int:
        total = 0
        while True:
            n = int(await self._run("SWEEP", [repr(older_than), SWEEP_BATCH]))
            total += n
            if n < SWEEP_BATCH:
                return total

    async def recent(self, limit: int, status: str | None = None) -> list[TaskRecord]:
        out: list[TaskRecord] = []
        start, page = 0, max(limit, 100)
        while len(out) < limit:
            async with guarded("tasks"):
                ids = await self.client.zrevrange(f"{self.p}created", start, start + page - 1)
            if not ids:
                break
            out += [r for r in await self._records(ids) if status is None or r.status == status]
            start += page
        return out[:limit]

    # -- leases ---------------------------------------------------------------------------------------

    async def renew(self) -> list[str]:
        """Renew every lease we hold (and our heartbeat); leases found taken are dropped and reported to
        `on_lost`. Returns the ids whose record Redis no longer has (to be written again)."""
        await self.retry()
        pairs = list(self.held.items())
        args: list[Any] = [self.lease_ms, self.instance]
        for task_id, token in pairs:
            args += [task_id, token]
        out = await self._run("RENEW", args, "task leases")
        self.instances = int(out[0])
        lost = [tid for (tid, _), r in zip(pairs, out[1:], strict=True) if int(r) == 0]
        for tid in lost:
            self.held.pop(tid, None)
        if lost:
            log.warning("task lease lost; another process polls these tasks now", extra={"tasks": len(lost)})
            self.on_lost(lost)
        return [tid for (tid, _), r in zip(pairs, out[1:], strict=True) if int(r) == 2]

    async def claim(self, ids: Sequence[str] = (), share: int = 50, cap: int = 2000
                    ) -> list[tuple[TaskRecord, bool]]:
        """Take the lease of unleased tasks: the given ones, or (none given) of those whose lease expired,
        up to this process's fair share. Returns each claimed record and whether a cancel was asked for it."""
        out = await self._run("CLAIM", [self.lease_ms, share, cap, len(self.held), *ids], "task leases")
        claimed: list[tuple[TaskRecord, bool]] = []
        for i in range(0, len(out), 4):
            task_id = out[i].decode()
            self.held[task_id] = out[i + 1].decode()
            raw = out[i + 2]
            try:
                rec = _decode(raw)
            except (msgspec.DecodeError, TypeError):
                log.error("unreadable task record skipped", extra={"task_id": task_id})
                continue
            claimed.append((rec, out[i + 3] == b"1"))
        return claimed

    async def release(self, ids: Sequence[str] | None = None) -> int:
        """Give up leases (all of ours by default): the next scan of another process takes the tasks."""
        chosen = list(self.held) if ids is None else [i for i in ids if i in self.held]
        if not chosen and ids is not None:
            return 0
        args: list[Any] = [self.instance if ids is None else ""]
        for task_id in chosen:
            args += [task_id, self.held.pop(task_id)]
        return int(await self._run("RELEASE", args, "task leases"))

    async def progress(self, items: Sequence[tuple[str, str, int]]) -> None:
        """Live (status, percent) of held tasks, stored and published to their listeners in one call."""
        args: list[Any] = []
        for task_id, status, percent in items:
            token = self.held.get(task_id)
            if token is not None:
                args += [task_id, token, status, str(int(percent))]
        if args:
            await self._run("PROGRESS", args, "task progress")

    async def ask_cancel(self, task_id: str) -> None:
        """Mark a task to be cancelled by whoever polls it (now, or after a takeover)."""
        async with guarded("the task"):
            key = f"{self.p}t:{task_id}"
            if await self.client.exists(key):
                await self.client.hset(key, "c", "1")

    async def ping(self) -> bool:
        try:
            async with guarded():
                await self.client.ping()
            return True
        except Exception:
            return False


def _live(raw: bytes | None, pct: bytes | None, status: bytes | None) -> TaskRecord | None:
    """A stored record with the live progress its poller publishes between status writes."""
    if raw is None:
        return None
    rec = _decode(raw)
    if rec.status not in TERMINAL and status is not None:
        live = status.decode()
        if live not in TERMINAL:
            rec.status = live
            rec.progress = max(rec.progress, int(pct or 0))
    return rec
