"""One pipelined Redis connection for the commands a request itself waits on (a rate-limit script).

redis-py's asyncio client costs ~120-200 µs of CPU per command here (a pooled connection checked out
and back, retry and tracing wrappers, its parser): as much as the rest of a gateway request. This
connection is an asyncio Protocol that writes the commands of one loop turn together and matches
replies to callers in order (Redis answers in order), so concurrent requests share one socket and a command costs a few
microseconds of our own code. Everything else (idempotency, breaker messages, tasks) uses redis-py
(state/redis.py); this is only for the per-request path.

Errors are redis-py's exception classes, so `guarded()` turns them into StateUnavailable. A command
unanswered after COMMAND_TIMEOUT_S, on a connection Redis has sent nothing on for as long, fails (with
every other one waiting on it, and it is closed); the next command reconnects. URLs as REDIS_URL:
redis://, rediss:// (TLS), unix://, with a username/password and a database number.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from typing import Any

from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redis import COMMAND_TIMEOUT_S, CONNECT_TIMEOUT_S

Reply = Any  # int | bytes | None | list[Reply] | ResponseError


def encode(args: tuple[Any, ...]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else (str(a) if not isinstance(a, str) else a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def sha1(script: bytes) -> str:
    return hashlib.sha1(script).hexdigest()


class _Parser:
    """RESP2 replies from a byte stream; `feed` then `next()` until it returns the NEED sentinel."""

    NEED = object()

    def __init__(self) -> None:
        self.buf = bytearray()
        self.pos = 0

    def feed(self, data: bytes) -> None:
        if self.pos:
            del self.buf[: self.pos]
            self.pos = 0
        self.buf += data

    def next(self) -> Reply:
        start = self.pos
        got = self._one()
        if got is _Parser.NEED:
            self.pos = start
        return got

    def _one(self) -> Reply:
        buf = self.buf
        end = buf.find(b"\r\n", self.pos)
        if end < 0:
            return _Parser.NEED
        kind, line = buf[self.pos], bytes(buf[self.pos + 1 : end])
        self.pos = end + 2
        if kind == 58:  # ':'
            return int(line)
        if kind == 36:  # '$'
            n = int(line)
            if n < 0:
                return None
            if len(buf) < self.pos + n + 2:
                return _Parser.NEED
            data = bytes(buf[self.pos : self.pos + n])
            self.pos += n + 2
            return data
        if kind == 42:  # '*'
            n = int(line)
            if n < 0:
                return None
            items = []
            for _ in range(n):
                item = self._one()
                if item is _Parser.NEED:
                    return _Parser.NEED
                items.append(item)
            return items
        if kind == 43:  # '+'
            return line
        if kind == 45:  # '-'
            text = line.decode(errors="replace")
            return NoScriptError(text) if text.startswith("NOSCRIPT") else ResponseError(text)
        raise RedisConnectionError("unexpected reply from Redis")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[tuple[asyncio.Future[Reply], float]] = collections.deque()
        self.parser = _Parser()
        self.out: list[bytes] = []  # commands not yet written (flushed once per loop turn)
        self.lost = False
        self.heard = 0.0  # loop time of the last bytes from Redis

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.lost:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # (uvloop's TCPTransport is not a subclass)

    def data_received(self, data: bytes) -> None:
        self.heard = asyncio.get_running_loop().time()
        self.parser.feed(data)
        while self.waiting:
            reply = self.parser.next()
            if reply is _Parser.NEED:
                return
            fut = self.waiting.popleft()[0]
            if not fut.done():
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError("connection to Redis lost"))

    def fail(self, exc: Exception) -> None:
        self.lost = True
        while self.waiting:
            fut = self.waiting.popleft()[0]
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()


class FastConnection:
    """`await call(*args)` and `await evalsha(script, keys, args)`, pipelined on one connection."""

    def __init__(self, url: str) -> None:
        self.opts: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        self.tls = url.startswith("rediss://")
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    async def call(self, *args: Any) -> Reply:
        return await self.send(encode(args))

    async def send(self, command: bytes) -> Reply:
        """One command already encoded (`encode`): a caller that repeats one can encode it once."""
        proto = self._proto
        if proto is None or proto.lost:
            proto = await self._connect()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Reply] = loop.create_future()
        proto.waiting.append((fut, loop.time()))
        # Commands issued in one turn of the loop leave in one write (one syscall here, one read at Redis).
        proto.out.append(command)
        if len(proto.out) == 1:
            loop.call_soon(proto.flush)
        if self._watchdog is None:
            self._watchdog = loop.call_later(COMMAND_TIMEOUT_S / 4, self._watch)
        reply = await fut
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def evalsha(self, script: bytes, keys: tuple[Any, ...], args: tuple[Any, ...],
                      prepared: bytes | None = None) -> Reply:
        """EVALSHA, loading the script when the server lacks it; `prepared`: this very EVALSHA, encoded."""
        try:
            return await self.send(prepared or encode((b"EVALSHA", sha1(script), len(keys), *keys, *args)))
        except NoScriptError:  # first use on this server (or after a restart / SCRIPT FLUSH)
            return await self.call(b"EVAL", script, len(keys), *keys, *args)

    def _watch(self) -> None:
        """Fails a connection whose oldest command waited past COMMAND_TIMEOUT_S; re-arms while busy."""
        self._watchdog = None
        proto = self._proto
        if proto is None or not proto.waiting:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Silent for that long too: a loop that was merely slow to read a reply is not a dead Redis.
        if now - proto.waiting[0][1] > COMMAND_TIMEOUT_S and now - proto.heard > COMMAND_TIMEOUT_S:
            proto.fail(RedisTimeoutError("Redis did not answer in time"))
            return
        self._watchdog = loop.call_later(COMMAND_TIMEOUT_S / 4, self._watch)

    async def _connect(self) -> _Protocol:
        if self._connecting is not None:  # one connect for every caller arriving meanwhile
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        try:
            proto = await asyncio.wait_for(self._open(), CONNECT_TIMEOUT_S)
        except (TimeoutError, OSError, ResponseError) as e:
            err = RedisConnectionError(f"cannot connect to Redis ({type(e).__name__})")
            self._connecting.set_exception(err)
            self._connecting.exception()
            self._connecting = None
            raise err from None
        self._proto = proto
        self._connecting.set_result(proto)
        self._connecting = None
        return proto

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        o = self.opts
        if "path" in o:
            _, proto = await loop.create_unix_connection(_Protocol, o["path"])
        else:
            ctx = ssl.create_default_context() if self.tls else None
            _, proto = await loop.create_connection(_Protocol, o.get("host", "localhost"), o.get("port", 6379),
                                                   ssl=ctx)
        if o.get("password"):
            auth = (o["username"], o["password"]) if o.get("username") else (o["password"],)
            await self._raw(proto, b"AUTH", *auth)
        if o.get("db"):
            await self._raw(proto, b"SELECT", o["db"])
        return proto

    @staticmethod
    async def _raw(proto: _Protocol, *args: Any) -> None:
        fut: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        proto.waiting.append((fut, 0.0))
        assert proto.transport is not None
        proto.transport.write(encode(args))
        reply = await fut
        if isinstance(reply, ResponseError):
            raise reply

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._proto is not None and self._proto.transport is not None:
            self._proto.transport.close()
        self._proto = None
