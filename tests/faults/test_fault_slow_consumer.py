"""A client that stops reading while ~100 events/s flow is cut off, on a real socket.

The slow client connects with a tiny receive buffer and then never reads
again; the server's write blocks once the kernel's send buffer (up to
``tcp_wmem`` max, ~4 MiB) and the transport's are full, and ``SEND_TIMEOUT``
(1 s here) later the stream is closed. The events are as large as the field
limits allow so the buffers fill fast; the bound is counted in events sent,
so a slow machine that manages fewer than 100 events/s does not fail it. Meanwhile a
fast client on the same branch must get every event, in order, without a gap,
and the server's memory must stay flat: nothing queues up for the dead reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx

from conftest import LiveFactory
from faultkit import RawStream, login_cookie, metric, rss_kib, scale

SEND_TIMEOUT = 1.0
RATE = 100  # events per second, at most
IN_FLIGHT = 8
# The largest case-updated event the field limits allow (~7.5 KB): the fewer
# events it takes to fill the socket buffers, the sooner the write blocks.
CHANGES = {
    "customer_name": "n" * 120,
    "customer_phone": "p" * 40,
    "product": "q" * 120,
    "serial_number": "s" * 80,
    "issue": "i" * 2000,
    "notes": "x" * 5000,
}


def _kernel_send_buffer_max() -> int:
    """What Linux may queue on one TCP socket before the server's write blocks."""
    try:
        return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):
        return 4 * 1024 * 1024


async def test_slow_consumer_is_cut_off_and_others_are_unaffected(
    live_factory: LiveFactory,
) -> None:
    server, world = live_factory(send_timeout=str(SEND_TIMEOUT))
    assert server.process is not None
    pid = server.process.pid
    branch, case = world.branches["downtown"], world.cases["phone"]
    alice_cookie, csrf = login_cookie(server.url, "alice@example.com")
    bob_cookie, _ = login_cookie(server.url, "bob@example.com")
    path = f"/api/branches/{branch}/events?client_id="
    fast = await RawStream(server.port, path + "fast", bob_cookie).open()
    head = int((await fast.read_until("ready")).id or 0)
    slow = await RawStream(server.port, path + "slow", alice_cookie).open(rcvbuf=4096)
    await slow.read_until("ready")
    stopped_reading = time.monotonic()  # from here on nobody reads `slow`

    max_duration = scale(40.0, 120.0)
    after_cut = scale(1.0, 20.0)  # keep the flow going this long after the cut
    acknowledged: list[float] = []
    cut_at: float | None = None
    peak_rss = baseline_rss = rss_kib(pid)
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def write(http: httpx.AsyncClient, n: int) -> None:
        async with slots:
            changes = {field: f"{n}:{value}"[: len(value)] for field, value in CHANGES.items()}
            response = await http.patch(
                f"/api/cases/{case}", json={"changes": changes}, headers={"X-CSRF-Token": csrf}
            )
        assert response.status_code == 200, response.text
        acknowledged.append(time.monotonic())

    async def writer() -> None:
        async with httpx.AsyncClient(
            base_url=server.url, cookies={"warrantysync_session": alice_cookie}, timeout=30
        ) as http:
            tasks = []
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < max_duration:
                if cut_at is not None and time.monotonic() - cut_at > after_cut:
                    break
                await slots.acquire()  # pace by the server's speed, at most RATE
                slots.release()
                await asyncio.sleep(max(0.0, started + n / RATE - time.monotonic()))
                tasks.append(asyncio.create_task(write(http, n)))
                n += 1
            await asyncio.gather(*tasks)

    async def fast_reader() -> None:
        while not (writing.done() and len(fast.events("case-updated")) >= len(acknowledged)):
            with contextlib.suppress(TimeoutError):
                await fast._more(0.5)
            fast._parse()

    async def watch() -> None:
        nonlocal cut_at, peak_rss
        while not writing.done():
            peak_rss = max(peak_rss, rss_kib(pid))
            if cut_at is None and await asyncio.to_thread(
                metric, server.url, "warrantysync_slow_subscriber_disconnects_total"
            ):
                cut_at = time.monotonic()
            await asyncio.sleep(0.1)

    writing = asyncio.create_task(writer())
    await asyncio.wait_for(asyncio.gather(writing, fast_reader(), watch()), max_duration + 60)

    assert cut_at is not None, f"not cut off after {len(acknowledged)} events"
    cut_after = cut_at - stopped_reading
    sent_before_cut = sum(1 for at in acknowledged if at < cut_at)
    # Cut once the kernel would take no more plus at most one send timeout's
    # worth of events (+2 s of slack for a loaded machine) — not later.
    frame = len(str(CHANGES)) + 300
    bound = (_kernel_send_buffer_max() + 512 * 1024) // frame + int(RATE * (SEND_TIMEOUT + 2))
    assert sent_before_cut <= bound, (sent_before_cut, bound)
    # Reading again, the slow client finds the end of its stream: the server hung up.
    await slow.read_to_eof(timeout=10)
    assert slow.eof
    assert len(slow.events("case-updated")) < len(acknowledged)
    # The fast reader got every event, in order, without a gap.
    ids = [int(f.id or 0) for f in fast.events("case-updated")]
    assert ids == list(range(head + 1, head + 1 + len(acknowledged)))
    # Memory stayed flat: nothing queued up for the dead reader.
    growth_mib = (peak_rss - baseline_rss) / 1024
    assert growth_mib < 40, f"server RSS grew by {growth_mib:.1f} MiB"
    assert await asyncio.to_thread(metric, server.url, "warrantysync_streams_open") == 1
    rate = len(acknowledged) / (acknowledged[-1] - stopped_reading)
    print(
        f"\nslow consumer: {len(acknowledged)} events at {rate:.0f}/s; cut after {cut_after:.1f}s"
        f" and {sent_before_cut} events (bound {bound}); server RSS"
        f" {baseline_rss // 1024}->{peak_rss // 1024} MiB"
    )
    await fast.close()
    await slow.close()
