"""web/sse.py's SlimEvent behaves as the asyncio.Event it replaces in uvicorn."""

from __future__ import annotations

import asyncio

import pytest

from warrantysync.web.sse import SlimEvent


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
