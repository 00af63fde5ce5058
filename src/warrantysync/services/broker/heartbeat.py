"""Heartbeats: one frame per branch, the same bytes to each of its streams, in slices.

A heartbeat is a real event, not an SSE comment (docs/protocol.md, "The event
stream"): the client's watchdog must see it. Its ``last_event_id`` lets a
client notice a gap without a fetch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from ..events import HEARTBEAT, Event
from . import fanout
from .subscriber import Subscriber

# Heartbeats go out this many streams at a time, the event loop free in
# between: 10,000 writes in one go would hold up every request (and every
# edit's fan-out) for ~200 ms each interval (docs/performance.md, 11).
HEARTBEAT_SLICE = 1000


async def send_heartbeats(
    branches: Iterable[tuple[int, tuple[Subscriber, ...]]], head: Callable[[int], int]
) -> int:
    """Send every stream its branch's heartbeat; returns how many streams got one.

    An event delivered between two slices may leave later streams a heartbeat
    whose ``last_event_id`` is behind what they have; clients only act on one
    that is ahead.
    """
    # Milliseconds are all a client's clock check needs; every byte of an
    # idle stream's heartbeat is paid by every stream, every interval.
    now = round(time.time(), 3)
    sent = 0
    for branch_id, subscribers in branches:
        payload = {"server_time": now, "last_event_id": str(head(branch_id))}
        event = Event.of(branch_id, HEARTBEAT, payload)
        for start in range(0, len(subscribers), HEARTBEAT_SLICE):
            if sent:
                await asyncio.sleep(0)
            part = subscribers[start : start + HEARTBEAT_SLICE]
            fanout.push(part, event)
            sent += len(part)
    return sent
