"""``presence`` events, coalesced: only the newest of a burst reaches the streams.

Every join and leave publishes one, each the complete viewer list, so N
streams connecting at once (a deploy, a reconnect storm) would otherwise cost
N² writes (docs/performance.md, "Optimisations", 1). The newest waits a
little and is delivered alone; the wait grows with the audience: a small
branch sees changes within ``PRESENCE_MIN_WAIT``, a branch of 10,000 within
about a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..events import Event

PRESENCE_MIN_WAIT = 0.02  # seconds a presence event waits for newer ones
PRESENCE_MAX_WAIT = 1.0
PER_STREAM_WAIT = 1e-4


class PresenceCoalescer:
    def __init__(self, deliver: Callable[[Event], None]) -> None:
        self._deliver = deliver
        self._newest: dict[int, Event] = {}

    def hold(self, event: Event, *, audience: int) -> None:
        """Keep ``event`` as its branch's newest; the first of a burst schedules the delivery."""
        waiting = event.branch_id in self._newest
        self._newest[event.branch_id] = event
        if waiting:
            return
        wait = min(PRESENCE_MAX_WAIT, max(PRESENCE_MIN_WAIT, audience * PER_STREAM_WAIT))
        asyncio.get_running_loop().call_later(wait, self._flush, event.branch_id)

    def _flush(self, branch_id: int) -> None:
        event = self._newest.pop(branch_id, None)
        if event is not None:
            self._deliver(event)
