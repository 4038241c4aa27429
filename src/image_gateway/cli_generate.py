"""`image-gateway generate`: one image request from the command line, with a progress bar.

    image-gateway generate --model M --prompt P [--size WxH] [--n N] [--image in.png [--mask m.png]]
                           [-o out.png|dir] [--url http://gateway] [--key K] [--task]

Against a running gateway (`--url`), or without it in-process on the local configuration (a
temporary data directory of its own, so a gateway running on the same one is not disturbed).
By default the request streams (`stream: true`), and the bar follows its partial images; with
`--task` it becomes an async task and the bar follows the task's progress events. The files are
written, their paths printed one a line; a failure prints `error: <message>` and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from tqdm import tqdm

from .cli_client import CommandError, Target, check, client, sse, transport_error
from .core.settings import Config

PARTIALS = 2  # partial images asked for: the bar's steps on a provider that streams previews
_EXT = {"jpeg": "jpg"}


@dataclass
class Outcome:
    images: list[tuple[bytes, str]] = field(default_factory=list)  # (bytes, format)
    task_id: str | None = None


class Bar:
    """A tqdm bar on stderr in percent: only forward, and quiet when asked (or not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.bar = tqdm(total=100, unit="%", desc="generating", file=sys.stderr, disable=quiet,
                        bar_format="{desc} {bar} {n:.0f}% [{elapsed}]", leave=False, mininterval=0, miniters=1)

    def to(self, percent: float, desc: str | None = None) -> None:
        if percent > self.bar.n:
            self.bar.update(min(100.0, percent) - self.bar.n)
        if desc and desc != self.bar.desc:
            self.bar.set_description_str(desc)  # (each step shows, however close together they come)

    def note(self, text: str) -> None:
        """A line of its own on stderr, above the bar."""
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


def _fields(args: argparse.Namespace, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": args.model, "prompt": args.prompt, "n": args.n}
    if args.size:
        body["size"] = args.size
    if stream:
        body.update(stream=True, partial_images=PARTIALS)
    else:
        body["response_format"] = "b64_json"
    return body


async def _post(c: httpx.AsyncClient, args: argparse.Namespace, stream: bool) -> httpx.Response:
    """The request: JSON generations, or a multipart edit when images are given. Returns the open response."""
    body = _fields(args, stream)
    headers = {} if stream else {"Prefer": "respond-async"}
    if not args.image:
        req = c.build_request("POST", "/v1/images/generations", json=body, headers=headers)
    else:
        files = [("image[]" if len(args.image) > 1 else "image", (p.name, p.read_bytes(), "image/png"))
                 for p in args.image]
        if args.mask:
            files.append(("mask", (args.mask.name, args.mask.read_bytes(), "image/png")))
        data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in body.items()}
        req = c.build_request("POST", "/v1/images/edits", data=data, files=files, headers=headers)
    return await c.send(req, stream=True)


def _json(text: str) -> dict[str, Any]:
    try:
        data = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise CommandError(f"the gateway sent an event that is not JSON: {text[:200]}") from None
    if not isinstance(data, dict):
        raise CommandError(f"the gateway sent an unexpected event: {text[:200]}")
    return data


def _raise_if_error(data: dict[str, Any]) -> None:
    err = data.get("error")
    if isinstance(err, dict):
        code = f" ({err['code']})" if err.get("code") else ""
        raise CommandError(f"{err.get('message') or 'the request failed'}{code}")


async def run_stream(c: httpx.AsyncClient, args: argparse.Namespace, bar: Bar) -> Outcome:
    out = Outcome()
    resp = await _post(c, args, stream=True)
    try:
        await check(resp)
        async for ev in sse(resp):
            if ev.name == "comment":
                m = re.fullmatch(r"progress (\d+)%", ev.data)
                if m:
                    bar.to(int(m.group(1)))
                elif ev.data.startswith("task "):
                    out.task_id = ev.data[5:]
                continue
            if ev.data == "[DONE]":
                break
            data = _json(ev.data)
            _raise_if_error(data)
            kind = str(data.get("type", ""))
            if kind.endswith(".partial_image"):
                idx = int(data.get("partial_image_index", 0))
                pct = data.get("progress")
                bar.to(pct if isinstance(pct, int | float) else (idx + 1) * 90 / (PARTIALS + 1),
                       f"partial image {idx + 1}")
            elif kind.endswith(".completed"):
                out.images.append((base64.b64decode(data["b64_json"]), str(data.get("output_format") or "png")))
                bar.to(90 + 10 * len(out.images) / max(1, args.n), "received")
    finally:
        await resp.aclose()
    return out


async def run_task(c: httpx.AsyncClient, args: argparse.Namespace, bar: Bar) -> Outcome:
    """Submit as an async task (202), follow its events, take the result from the final task object."""
    resp = await _post(c, args, stream=False)
    body = await (await check(resp)).aread()
    task = _json(body.decode())
    out = Outcome(task_id=str(task["id"]))
    bar.note(f"task {out.task_id}")
    async with c.stream("GET", f"/v1/images/tasks/{out.task_id}/events") as events:
        await check(events)
        async for ev in sse(events):
            if ev.name == "comment" or ev.data == "[DONE]":
                continue
            data = _json(ev.data)
            if data.get("type") == "image.task.progress":
                bar.to(int(data.get("progress") or 0), str(data.get("status") or "running"))
            elif isinstance(data.get("task"), dict):
                task = data["task"]
    if task.get("status") != "succeeded":
        err = task.get("error") or {}
        raise CommandError(f"task {out.task_id} {task.get('status')}: {err.get('message', 'no result')}")
    result = task.get("result") or {}
    fmt = str(result.get("output_format") or "png")
    for item in result.get("data") or []:
        if item.get("b64_json"):
            out.images.append((base64.b64decode(item["b64_json"]), fmt))
        elif item.get("url"):
            got = await check(await c.get(item["url"]))
            out.images.append((got.content, fmt))
    return out


def _slug(prompt: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", prompt.lower()).strip("-")[:40] or "image"


def output_paths(raw: str | None, prompt: str, formats: list[str]) -> list[Path]:
    """Where the images go: `-o file` (file-1, file-2... for several), `-o dir/` (or an existing directory),
    or the working directory; in a directory, named after the prompt and never over an existing file."""
    exts = [_EXT.get(f, f) for f in formats]
    if raw and not (Path(raw).is_dir() or raw.endswith(("/", os.sep))):
        out = Path(raw)
        if len(formats) == 1:
            return [out]
        return [out.with_name(f"{out.stem}-{i}{out.suffix or '.' + ext}") for i, ext in enumerate(exts, 1)]
    folder = Path(raw) if raw else Path.cwd()
    paths: list[Path] = []
    for ext in exts:
        i = 1
        while (p := folder / f"{_slug(prompt)}-{i}.{ext}").exists() or p in paths:
            i += 1
        paths.append(p)
    return paths


async def _generate(args: argparse.Namespace, target: Target, cfg: Config | None) -> list[Path]:
    bar = Bar(args.quiet)
    try:
        with tempfile.TemporaryDirectory(prefix="image-gateway-cli-") as tmp:
            async with client(target, cfg, data_dir=Path(tmp)) as c:
                outcome = await (run_task if args.task else run_stream)(c, args, bar)
    except httpx.HTTPError as e:
        raise transport_error(target, e) from None
    finally:
        bar.close()
    if not outcome.images:
        raise CommandError("the gateway answered without an image")
    paths = output_paths(args.output, args.prompt, [f for _, f in outcome.images])
    for path, (data, _) in zip(paths, outcome.images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return paths


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="generate (or edit) images, with a progress bar")
    p.add_argument("--model", required=True, help="a route name or alias (see `image-gateway models`)")
    p.add_argument("--prompt", required=True)
    p.add_argument("--size", help="WIDTHxHEIGHT, or auto")
    p.add_argument("--n", type=int, default=1, help="how many images (1-10)")
    p.add_argument("--image", type=Path, action="append", help="an image to edit (repeat for several)")
    p.add_argument("--mask", type=Path, help="the edit's mask (PNG with transparency)")
    p.add_argument("-o", "--output", help="a file (several: name-1, name-2...) or a directory")
    p.add_argument("--task", action="store_true", help="run as an async task and follow its progress events")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace, target: Target, cfg: Config | None) -> int:
    for path in [*(args.image or []), *([args.mask] if args.mask else [])]:
        if not path.is_file():
            raise CommandError(f"no such file: {path}")
    if args.mask and not args.image:
        raise CommandError("--mask needs --image")
    for path in asyncio.run(_generate(args, target, cfg)):
        print(path)
    return 0
