"""Waiting for something that happens on its own time, without timing assertions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable


async def until(check: Callable[[], bool], within: float = 10.0) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds (generous: loaded CI)."""
    for _ in range(int(within / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {within} s")


def sqlite_worker_threads() -> int:
    """aiosqlite's connection threads alive now."""
    return sum(1 for t in threading.enumerate() if "_connection_worker_thread" in t.name)


async def failed_connections_stopped(before: int) -> None:
    """aiosqlite stops a failed connection's thread through the running loop: let it,
    before the test's loop closes under it."""
    await until(lambda: sqlite_worker_threads() <= before)
