"""Catching a stream up from its resume id: the ring, or the outbox through a bounded queue.

A deploy or a network blip reconnects every tab at once (docs/architecture.md,
"When things go wrong"), so resuming must be cheap and bounded:

* the ``Ring`` keeps each branch's latest delivered events in memory and
  serves most resumes without touching the database;
* the rest read the outbox through ``Admission``: at most ``concurrency``
  reads at once, at most ``max_pending`` waiting their turn (first come,
  first served), and one deadline for waiting and reading together. A stream
  that cannot be served — the queue is full, the deadline passed, the
  database is away — raises ``Overloaded``; the stream answers ``goodbye``
  with a jittered ``retry_ms`` instead of piling onto the database.

Every decision is counted once, in ``catch_up``'s ``finally``:
``warrantysync_resumes_total{outcome}`` (docs/operations.md, "Metrics worth
an alert"), besides the older ``warrantysync_replays_total{source}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from ...errors import Unavailable
from ...ids import parse_id
from ...storage import outbox
from ...storage.db import Database
from ..events import Event
from ..metrics import Metrics
from .ordering import Ordering

RING_SIZE = 1024  # events per branch kept in memory
REPLAY_CONCURRENCY = 4  # outbox reads at once
REPLAY_MAX_PENDING = 64  # outbox reads waiting for one of those
REPLAY_DEADLINE = 5.0  # seconds for waiting and reading together

UNKNOWN = "resume id unknown or too old"
NOT_RETAINED = "events no longer retained"


class Overloaded(Exception):
    """A replay could not be served now; ``outcome`` says why (``overloaded``: queue full)."""

    def __init__(self, outcome: str = "overloaded") -> None:
        super().__init__(f"replay refused: {outcome}")
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class CatchUp:
    """What a stream sends before ``ready``.

    ``caught_up`` is the id the stream is caught up to (``ready``'s id);
    ``sync_required`` the reason the client must reload the snapshot instead
    of replaying, else None.
    """

    caught_up: int
    events: Sequence[Event] = ()
    sync_required: str | None = None


class Ring:
    """The latest ``size`` durable events of each branch, in id order."""

    def __init__(self, size: int = RING_SIZE) -> None:
        self.size = size
        self._rings: dict[int, deque[Event]] = {}

    def append(self, event: Event) -> None:
        ring = self._rings.get(event.branch_id)
        if ring is None:
            ring = self._rings[event.branch_id] = deque(maxlen=self.size)
        ring.append(event)

    def after(self, branch_id: int, after: int) -> list[Event] | None:
        """Every event after ``after``, or None when the ring does not reach back that far."""
        ring = self._rings.get(branch_id)
        if not ring or (ring[0].event_id or 0) > after + 1:
            return None
        return [event for event in ring if (event.event_id or 0) > after]


class Admission:
    """A bounded first-come, first-served queue in front of the outbox reads."""

    def __init__(self, metrics: Metrics, *, concurrency: int, max_pending: int) -> None:
        self._metrics = metrics
        self._slots = asyncio.Semaphore(concurrency)  # wakes its waiters in order
        self.max_pending = max_pending
        self.waiting = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked() and self.waiting >= self.max_pending:
            raise Overloaded("overloaded")
        self.waiting += 1
        self._metrics.replays_waiting.inc()
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1
            self._metrics.replays_waiting.dec()
        try:
            yield
        finally:
            self._slots.release()


class Replay:
    def __init__(
        self,
        db: Database,
        ordering: Ordering,
        metrics: Metrics,
        *,
        ring: Ring,
        window: int,
        concurrency: int = REPLAY_CONCURRENCY,
        max_pending: int = REPLAY_MAX_PENDING,
        deadline: float = REPLAY_DEADLINE,
    ) -> None:
        self._db = db
        self._ordering = ordering
        self._metrics = metrics
        self.ring = ring
        self.window = window
        self.deadline = deadline
        self.admission = Admission(metrics, concurrency=concurrency, max_pending=max_pending)

    def head(self, branch_id: int) -> int:
        return self._ordering.head(branch_id) or 0

    async def catch_up(self, branch_id: int, resume: str | None) -> CatchUp:
        """Decide and fetch what a stream resuming from ``resume`` missed.

        The stream is already subscribed, so anything committed meanwhile
        reaches it live; it drops what it gets twice by id.
        """
        outcome = "error"
        try:
            result, outcome = await self._decide(branch_id, resume)
            return result
        except Overloaded as exc:
            outcome = exc.outcome
            raise
        except Unavailable:
            outcome = "unavailable"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self._metrics.resumes.labels(outcome=outcome).inc()
            source = _SOURCES.get(outcome)
            if source is not None:
                self._metrics.replays.labels(source=source).inc()

    async def _decide(self, branch_id: int, resume: str | None) -> tuple[CatchUp, str]:
        head = self.head(branch_id)
        if resume is None:
            return CatchUp(head), "fresh"
        after = parse_id(resume)
        if after is not None and after > head:
            # This node may not have seen the newest commits yet: ask the outbox.
            async with self._db.read() as session:
                head = await outbox.head(session, branch_id=branch_id)
        if after is None or after > head or head - after > self.window:
            return CatchUp(head, sync_required=UNKNOWN), "sync_required"
        if after >= self.head(branch_id):
            events: list[Event] = []
            outcome = "current"
        else:
            ringed = self.ring.after(branch_id, after)
            if ringed is not None:
                events, outcome = ringed, "memory"
            else:
                events, outcome = await self._read(branch_id, after), "database"
        if events and events[0].event_id != after + 1:
            return CatchUp(self.head(branch_id), sync_required=NOT_RETAINED), "sync_required"
        if not events and after < head:
            async with self._db.read() as session:
                oldest = await outbox.oldest_id(session, branch_id=branch_id)
            if oldest is None or oldest > after + 1:
                return CatchUp(head, sync_required=NOT_RETAINED), "sync_required"
        caught_up = events[-1].event_id if events else after
        assert caught_up is not None
        return CatchUp(caught_up, events), outcome

    async def _read(self, branch_id: int, after: int) -> list[Event]:
        try:
            # The deadline counts the wait for a slot too.
            async with (
                asyncio.timeout(self.deadline),
                self.admission.slot(),
                self._db.read() as session,
            ):
                rows = await outbox.events_after(
                    session, branch_id=branch_id, after=after, limit=self.window
                )
        except TimeoutError:
            raise Overloaded("deadline_exceeded") from None
        return [Event(branch_id, row.kind, row.data.encode(), row.id) for row in rows]


# The older metric's sources: where a replay was served from, or that it was refused.
_SOURCES = {
    "memory": "memory",
    "database": "database",
    "overloaded": "refused",
    "deadline_exceeded": "refused",
    "unavailable": "refused",
}
