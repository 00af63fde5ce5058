"""Soak: thousands of stream connect/disconnect cycles leave nothing behind.

After a warm-up (allocator pools, caches, the first connections), the
server's resident memory must end within 10% of where it was, and the open
streams, asyncio tasks, threads and file descriptors must come back to
their level before the cycles. 1,000 cycles in ``make test``, 10,000 in
``make faults``.
"""

from __future__ import annotations

import asyncio
import time

from conftest import LiveFactory
from faultkit import RawStream, fd_count, login_cookie, metric, rss_kib, scale, thread_count

CYCLES = scale(1000, 10000)
WARM_UP = scale(300, 1000)
PARALLEL = 20


async def _cycles(port: int, paths: list[str], cookie: str, count: int) -> None:
    async def worker(w: int) -> None:
        for n in range(w, count, PARALLEL):
            stream = RawStream(port, paths[n % len(paths)] + f"soak{w}-{n % 7}", cookie)
            await stream.open()
            assert stream.status == 200
            await stream.read_until("ready")
            await stream.close()

    await asyncio.gather(*(worker(w) for w in range(PARALLEL)))


async def _settled(base_url: str, name: str, target: float, timeout: float = 10) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(metric, base_url, name)
        if value <= target or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.2)


async def test_connect_disconnect_cycles_leak_nothing(live_factory: LiveFactory) -> None:
    server, world = live_factory(max_streams_per_user="1000")
    assert server.process is not None
    pid = server.process.pid
    cookie, _csrf = login_cookie(server.url, "alice@example.com")
    paths = [
        f"/api/branches/{world.branches['downtown']}/events?client_id=",
        f"/api/branches/{world.branches['airport']}/events?client_id=",
    ]
    await _cycles(server.port, paths, cookie, WARM_UP)
    await _settled(server.url, "warrantysync_streams_open", 0)
    await asyncio.sleep(1.0)  # DISCONNECT_GRACE timers of the warm-up run out
    tasks_before = await asyncio.to_thread(metric, server.url, "warrantysync_asyncio_tasks")
    rss_before, threads_before, fds_before = rss_kib(pid), thread_count(pid), fd_count(pid)

    started = time.monotonic()
    await _cycles(server.port, paths, cookie, CYCLES)
    seconds = time.monotonic() - started

    assert await _settled(server.url, "warrantysync_streams_open", 0) == 0
    tasks_after = await _settled(server.url, "warrantysync_asyncio_tasks", tasks_before)
    rss_after, threads_after, fds_after = rss_kib(pid), thread_count(pid), fd_count(pid)
    growth = (rss_after - rss_before) / rss_before
    print(
        f"\nsoak: {CYCLES} cycles in {seconds:.1f}s; RSS {rss_before} -> {rss_after} KiB"
        f" ({growth:+.1%}); tasks {tasks_before:.0f} -> {tasks_after:.0f};"
        f" threads {threads_before} -> {threads_after}; fds {fds_before} -> {fds_after}"
    )
    assert growth <= 0.10, f"RSS grew {growth:.1%} over {CYCLES} cycles"
    assert tasks_after <= tasks_before, "asyncio tasks leaked"
    assert threads_after <= threads_before + 2
    assert fds_after <= fds_before + 5
