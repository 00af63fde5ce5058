"""web/fastpath.py: direct writes into uvicorn's transport, and that they really run.

The live tests fail when the fast path silently stops being taken (an
uvicorn release that moves what it relies on, a check that starts refusing):
a real ``warrantysync serve`` must report ``stream="direct"`` and deliver
edits by direct writes. ``SlimEvent`` must behave as the ``asyncio.Event``
it replaces in uvicorn.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from conftest import LiveFactory, login
from live import LiveServer, reading
from warrantysync.web.fastpath import SlimEvent


def _metrics(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _transport(samples: dict[str, float]) -> dict[str, str]:
    """The labels of the ``warrantysync_transport_info`` series whose value is 1."""
    (current,) = [
        k for k, v in samples.items() if k.startswith("warrantysync_transport_info{") and v == 1
    ]
    return dict(re.findall(r'(\w+)="([^"]*)"', current))


async def _one_edit_seen_live(server: LiveServer, world_branch: int, case: int) -> dict[str, float]:
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as alice,
        httpx.AsyncClient(base_url=server.url, timeout=10) as bob,
    ):
        csrf = await login(alice, "alice@example.com")
        await login(bob, "bob@example.com")
        async with reading(bob, f"/api/branches/{world_branch}/events?client_id=bob") as stream:
            await stream.next("ready")
            await asyncio.sleep(0.3)  # the stream is idle: its writer is lent out
            saved = await alice.patch(
                f"/api/cases/{case}", json={"changes": {"notes": "fast"}}, headers=csrf
            )
            assert saved.status_code == 200
            event = await stream.next("case-updated")
            assert event.data["changes"] == {"notes": "fast"}
            return _metrics((await alice.get("/metrics")).text)


async def test_a_served_stream_writes_directly_into_uvicorns_transport(
    live_factory: LiveFactory,
) -> None:
    server, world = live_factory()
    samples = await _one_edit_seen_live(server, world.branches["downtown"], world.cases["phone"])
    assert _transport(samples) == {"stream": "direct", "sqlite": "one_trip"}
    assert samples.get('warrantysync_deliveries_total{path="direct"}', 0) >= 1
    log = server.log()
    assert "event streams: direct writes into uvicorn's transport" in log
    assert "SQLite: one driver trip per statement" in log


async def test_turned_off_a_stream_takes_the_plain_asgi_path(live_factory: LiveFactory) -> None:
    server, world = live_factory(fast_paths="off")
    samples = await _one_edit_seen_live(server, world.branches["downtown"], world.cases["phone"])
    assert _transport(samples) == {"stream": "asgi", "sqlite": "stock"}
    assert samples.get('warrantysync_deliveries_total{path="direct"}', 0) == 0
    assert samples.get('warrantysync_deliveries_total{path="queued"}', 0) >= 1
    assert "event streams: plain ASGI sends: turned off" in server.log()


async def test_set_clear_and_wait() -> None:
    event = SlimEvent(False)
    assert not event.is_set()
    waiter = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    event.set()
    assert event.is_set() and await waiter is True
    assert await event.wait() is True  # already set: returns at once
    event.clear()
    assert not event.is_set()
    again = asyncio.create_task(event.wait())
    await asyncio.sleep(0)
    assert not again.done()
    event.set()
    event.clear()  # a set, even undone at once, wakes who was waiting (as asyncio.Event)
    assert await asyncio.wait_for(again, 1) is True


async def test_every_waiter_wakes_and_a_cancelled_one_does_not_cancel_the_rest() -> None:
    event = SlimEvent(False)
    waiters = [asyncio.create_task(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    waiters[0].cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiters[0]
    event.set()
    assert await asyncio.wait_for(asyncio.gather(*waiters[1:]), 1) == [True, True]


async def test_starts_set_when_the_replaced_event_was() -> None:
    assert await asyncio.wait_for(SlimEvent(True).wait(), 1) is True
