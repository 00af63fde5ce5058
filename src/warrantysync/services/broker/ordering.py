"""Durable events of each branch in id order, each once; gaps are read from the outbox.

The backend may hand this node an event ahead of one it has not seen yet
(another node's commit overtook it on the wire, or pub/sub dropped it). The
outbox is the truth (docs/architecture.md, "Alice changes a customer's
name; Bob sees it", step 6): an event ahead of a missing one waits ``GAP_WAIT``, then the
gap is read from the outbox. When the outbox no longer has it (pruned), the
branch's streams get ``sync-required`` rather than a hole.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ...storage import outbox
from ...storage.db import Database
from ..events import SYNC_REQUIRED, Event

log = logging.getLogger(__name__)

GAP_WAIT = 0.2  # seconds an out-of-order event waits for the missing one
GAP_ATTEMPTS = 10

Deliver = Callable[[Event], None]


class Ordering:
    """Hands each branch's durable events to ``deliver`` strictly in id order.

    ``head(branch_id)`` is the last id delivered without a gap before it: a
    stream subscribed now gets every event after it live.
    """

    def __init__(self, db: Database, *, deliver: Deliver, window: int) -> None:
        self._db = db
        self._deliver = deliver
        self._window = window
        self._heads: dict[int, int] = {}
        self._pending: dict[int, dict[int, Event]] = {}
        self._gap_tasks: dict[int, asyncio.Task[None]] = {}

    def head(self, branch_id: int) -> int | None:
        return self._heads.get(branch_id)

    def pending(self, branch_id: int) -> int:
        """Events that arrived ahead of a missing one and wait for it."""
        return len(self._pending.get(branch_id, ()))

    def branches(self) -> list[int]:
        return list(self._heads)

    async def know_head(self, branch_id: int) -> None:
        """Start the branch at the outbox's head unless an event already started it."""
        if branch_id in self._heads:
            return
        async with self._db.read() as session:
            head = await outbox.head(session, branch_id=branch_id)
        self._heads.setdefault(branch_id, head)  # an event may have set it meanwhile

    def accept(self, event: Event) -> None:
        assert event.event_id is not None
        branch_id, event_id = event.branch_id, event.event_id
        head = self._heads.setdefault(branch_id, event_id - 1)
        if event_id <= head:
            return  # already delivered (a gap fill and the live path raced)
        if event_id == head + 1:
            self._heads[branch_id] = event_id
            self._deliver(event)
            self._drain(branch_id)
            return
        self._pending.setdefault(branch_id, {})[event_id] = event
        task = self._gap_tasks.get(branch_id)
        if task is None or task.done():
            self._gap_tasks[branch_id] = asyncio.get_running_loop().create_task(
                self._fill_gap(branch_id), name=f"broker-gap-{branch_id}"
            )

    async def catch_up(self, branch_id: int) -> None:
        """Read whatever the outbox has after the branch's head (after a re-subscription)."""
        head = self._heads.get(branch_id)
        if head is None:
            return
        async with self._db.read() as session:
            rows = await outbox.events_after(
                session, branch_id=branch_id, after=head, limit=self._window
            )
        for row in rows:
            self.accept(Event(branch_id, row.kind, row.data.encode(), row.id))

    async def stop(self) -> None:
        """Cancel the gap reads and wait until they have ended.

        A read cancelled but not yet unwound still holds a database connection;
        the caller disposes of the engine next, and the loop may close after it.
        """
        tasks = list(self._gap_tasks.values())
        self._gap_tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _drain(self, branch_id: int) -> None:
        pending = self._pending.get(branch_id)
        while pending:
            following = pending.pop(self._heads[branch_id] + 1, None)
            if following is None:
                break
            self._heads[branch_id] += 1
            self._deliver(following)
        if not pending:
            self._pending.pop(branch_id, None)

    async def _fill_gap(self, branch_id: int, wait: float = GAP_WAIT) -> None:
        for _ in range(GAP_ATTEMPTS):
            await asyncio.sleep(wait)
            if not self._pending.get(branch_id):
                return
            try:
                await self.catch_up(branch_id)
            except Exception:
                log.exception("reading missing events of branch %s failed", branch_id)
            if not self._pending.get(branch_id):
                return
        # The outbox no longer has the missing events (pruned): tell every
        # stream to reload rather than deliver with a hole.
        log.warning("branch %s: gap could not be filled; asking streams to resync", branch_id)
        self._heads[branch_id] = min(self._pending[branch_id]) - 1
        self._deliver(Event.of(branch_id, SYNC_REQUIRED, {"reason": "gap"}))
        self._drain(branch_id)
