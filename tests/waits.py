"""Waiting on a condition instead of sleeping a fixed time: a test that waits for something to happen
asks for it with a deadline, so it is as fast as the thing it waits for and, on a loaded machine, only
the deadline (never the normal path) stretches. Fakes that answer slowly on purpose sleep in
tests/upstreams; nothing else in tests/ calls sleep."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02, *,
               what: str = "condition") -> T:
    """Call `predicate` until it returns something truthy, and return that; fail after `timeout`."""
    end = time.monotonic() + timeout
    while True:
        got = predicate()
        if got:
            return got
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {got!r})")
        time.sleep(interval)


@overload
async def await_until(predicate: Callable[[], Awaitable[T]], limit_s: float = ..., interval: float = ..., *,
                      what: str = ...) -> T: ...
@overload
async def await_until(predicate: Callable[[], T], limit_s: float = ..., interval: float = ..., *,
                      what: str = ...) -> T: ...
async def await_until(predicate: Callable[[], Any], limit_s: float = 5.0, interval: float = 0.01, *,
                      what: str = "condition") -> Any:
    """`wait_until` for code on an event loop: the loop keeps running between checks; `predicate` may
    be a coroutine function. (`limit_s` is `timeout`: that name is for asyncio's own.)"""
    end = time.monotonic() + limit_s
    while True:
        got = predicate()
        if inspect.isawaitable(got):
            got = await got
        if got:
            return got
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {limit_s:g} s waiting for {what} (last: {got!r})")
        await asyncio.sleep(interval)


def holds_for(predicate: Callable[[], object], duration: float, interval: float = 0.02, *,
              what: str = "condition") -> None:
    """That something does NOT happen can only be watched for a while: check `predicate` over
    `duration` and fail the moment it is false. Use after a positive wait that proves the system has
    moved on, with a duration of several of the intervals the thing would repeat at."""
    end = time.monotonic() + duration
    while True:
        assert predicate(), f"{what} stopped holding"
        if time.monotonic() >= end:
            return
        time.sleep(interval)
