"""`image-gateway tasks list | show ID | cancel ID`: the async tasks of a gateway.

With `--url`: through the API (`list` is GET /admin/tasks, so it takes the admin key: `--admin-key`
or ADMIN_API_KEY; `show`/`cancel` take the gateway key, `--key`). Without it, on the local
configuration's task store (DATA_DIR/tasks.sqlite3): `list` and `show` read it; `cancel` runs the
gateway in-process on it and cancels through the API, the upstream task too where it can. (Use
`--url` while a gateway is running on that data directory: one process per data directory.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
from typing import Any

import httpx
import msgspec

from .api.task_view import task_object
from .cli_client import CommandError, Target, check, client, transport_error
from .core.settings import Config
from .engine.sqlite_store import SqliteTaskStore

STATUSES = ("queued", "in_progress", "succeeded", "failed", "cancelled")


async def _local(cfg: Config, task_id: str | None, limit: int, status: str | None) -> list[dict[str, Any]]:
    path = cfg.data_dir / "tasks.sqlite3"
    if not path.exists():
        return []
    store = SqliteTaskStore(path)
    await store.open()
    try:
        if task_id is not None:
            rec = await store.get(task_id)
            return [task_object(rec)] if rec is not None else []
        return [task_object(r) for r in await store.recent(limit, status)]
    finally:
        await store.close()


async def _api(target: Target, method: str, path: str, bearer: str | None = None,
               cfg: Config | None = None) -> Any:
    try:
        async with client(target, cfg) as c:
            resp = await check(await c.request(method, path, headers=target.headers(bearer)))
            return msgspec.json.decode(resp.content)
    except httpx.HTTPError as e:
        raise transport_error(target, e) from None


def _when(ts: Any) -> str:
    return datetime.datetime.fromtimestamp(int(ts)).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _table(tasks: list[dict[str, Any]]) -> str:
    if not tasks:
        return "no tasks"
    rows = [("ID", "STATUS", "PROGRESS", "MODEL", "CREATED")]
    rows += [(str(t["id"]), str(t["status"]), f"{t.get('progress', 0)}%", str(t["model"]), _when(t.get("created")))
             for t in tasks]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_tasks(args: argparse.Namespace, target: Target, cfg: Config | None) -> int:
    remote = target.url is not None
    if args.action == "list":
        if remote:
            admin = args.admin_key or os.environ.get("ADMIN_API_KEY")
            if not admin:
                raise CommandError("listing a gateway's tasks takes its admin key: --admin-key or ADMIN_API_KEY")
            query = f"?limit={args.limit}" + (f"&status={args.status}" if args.status else "")
            tasks = asyncio.run(_api(target, "GET", f"/admin/tasks{query}", bearer=admin))["data"]
        else:
            assert cfg is not None
            tasks = asyncio.run(_local(cfg, None, args.limit, args.status))
        print(_table(tasks))
        return 0
    if args.action == "show" and not remote:
        assert cfg is not None
        found = asyncio.run(_local(cfg, args.id, 1, None))
        if not found:
            raise CommandError(f"No task '{args.id}' in {cfg.data_dir / 'tasks.sqlite3'} (unknown, or expired).")
        task = found[0]
    else:
        method = "DELETE" if args.action == "cancel" else "GET"
        task = asyncio.run(_api(target, method, f"/v1/images/tasks/{args.id}", cfg=cfg))
    print(json.dumps(task, indent=2, ensure_ascii=False))
    return 0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tasks", help="list, show or cancel async tasks")
    actions = p.add_subparsers(dest="action", required=True)
    ls = actions.add_parser("list", parents=[common], help="recent tasks, newest first")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--admin-key", help="the gateway's ADMIN_API_KEY (with --url; else $ADMIN_API_KEY)")
    for name, help_ in (("show", "one task, as JSON"), ("cancel", "cancel a task (the upstream task too)")):
        a = actions.add_parser(name, parents=[common], help=help_)
        a.add_argument("id", help="the task id (imgtask_...)")
    p.set_defaults(func=cmd_tasks)
