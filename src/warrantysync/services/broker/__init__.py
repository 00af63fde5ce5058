"""Fan-out of events to the open streams of this process.

The backend (``memory://`` or ``redis://``) only carries events between
processes. This front class makes delivery exact: durable events reach
subscribers strictly in id order, each once; an event that arrives ahead of
a missing one waits briefly, then the gap is read from the outbox, which is
the truth. Each branch keeps a ring of its latest delivered events so most
resumes (a network blip, a deploy) never touch the database; the rest go
through a bounded pool with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import Unavailable
from ...jsonutil import dumps
from ...storage import outbox
from ...storage.db import Database
from ..backends import by_scheme
from ..events import GOODBYE, HEARTBEAT, PRESENCE, STATE, SYNC_REQUIRED, Event, encode
from ..live import unavailable_state
from ..metrics import Metrics
from .base import BrokerBackend
from .memory import MemoryBrokerBackend
from .subscriber import Subscriber

log = logging.getLogger(__name__)

GAP_WAIT = 0.2  # seconds an out-of-order event waits for the missing one
GAP_ATTEMPTS = 10
PRESENCE_MIN_WAIT = 0.02  # seconds a presence event waits for newer ones
PRESENCE_MAX_WAIT = 1.0
# Heartbeats go out this many streams at a time, the event loop free in
# between: 10,000 writes in one go would hold up every request (and every
# edit's fan-out) for ~200 ms each interval.
HEARTBEAT_SLICE = 1000
StateProvider = Callable[[int], Awaitable[dict[str, Any]]]
StateView = Callable[[dict[str, Any], int], dict[str, Any]]


@dataclass
class _Branch:
    ring: deque[Event]
    subscribers: set[Subscriber] = field(default_factory=set)
    delivered: int | None = None  # the contiguous delivered id
    pending: dict[int, Event] = field(default_factory=dict)
    gap_task: asyncio.Task[None] | None = None
    presence: Event | None = None  # the newest, waiting out a burst of joins and leaves


class Overloaded(Exception):
    """A replay could not be served before its deadline."""


def make_broker_backend(url: str | None) -> BrokerBackend:
    return by_scheme(url, package=__name__, memory=MemoryBrokerBackend, redis="RedisBrokerBackend")


class Broker:
    def __init__(
        self,
        backend: BrokerBackend,
        *,
        db: Database,
        metrics: Metrics,
        ring_size: int = 1024,
        replay_concurrency: int = 4,
        replay_deadline: float = 5.0,
        replay_window: int = 10000,
    ) -> None:
        self.backend = backend
        self.db = db
        self.metrics = metrics
        self.ring_size = ring_size
        self.replay_window = replay_window
        self.replay_deadline = replay_deadline
        self._replay_slots = asyncio.Semaphore(replay_concurrency)
        self._branches: dict[int, _Branch] = {}
        self.state_provider: StateProvider | None = None
        # What of the branch's state one user may see (their own client ids only).
        self.state_view: StateView | None = None
        self.shutting_down = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self.backend.connect(self._on_event, self._on_resubscribe, self._on_lost)

    async def stop(self) -> None:
        for branch in self._branches.values():
            if branch.gap_task is not None:
                branch.gap_task.cancel()
        await self.backend.disconnect()

    def begin_shutdown(self, retry_ms: tuple[int, int] = (1000, 5000)) -> int:
        """Say goodbye to every stream, each with its own jittered retry."""
        self.shutting_down = True
        count = 0
        for branch in self._branches.values():
            for sub in list(branch.subscribers):
                sub.close("shutdown", goodbye_frame("shutdown", retry_ms))
                count += 1
        return count

    # -- publishing ------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        self.metrics.events_published.labels(kind=event.kind).inc()
        await self.backend.publish(event)

    async def publish_ephemeral(
        self, branch_id: int, kind: str, payload: Any, *, owner: tuple[int, Any] | None = None
    ) -> None:
        """``owner=(user_id, payload)``: that user's streams get their own copy (``Event``)."""
        await self.publish(Event.of(branch_id, kind, payload, owner=owner))

    # -- subscribers -----------------------------------------------------------

    def _branch(self, branch_id: int) -> _Branch:
        branch = self._branches.get(branch_id)
        if branch is None:
            branch = self._branches[branch_id] = _Branch(ring=deque(maxlen=self.ring_size))
        return branch

    async def subscribe(self, sub: Subscriber) -> None:
        branch = self._branch(sub.branch_id)
        if branch.delivered is None:
            async with self.db.read() as session:
                head = await outbox.head(session, branch_id=sub.branch_id)
            if branch.delivered is None:  # an event may have set it meanwhile
                branch.delivered = head
        branch.subscribers.add(sub)
        self.metrics.streams_open.inc()

    def unsubscribe(self, sub: Subscriber) -> None:
        branch = self._branches.get(sub.branch_id)
        if branch is not None and sub in branch.subscribers:
            branch.subscribers.discard(sub)
            self.metrics.streams_open.dec()

    def subscribers(self) -> list[Subscriber]:
        return [sub for branch in self._branches.values() for sub in branch.subscribers]

    def head(self, branch_id: int) -> int:
        return self._branch(branch_id).delivered or 0

    # -- replay ----------------------------------------------------------------

    async def replay_after(self, branch_id: int, after: int) -> list[Event]:
        """Every durable event after ``after`` known now, in order.

        Later ones reach the (already registered) subscriber live.
        """
        branch = self._branch(branch_id)
        ring = branch.ring
        if branch.delivered is not None and after >= branch.delivered:
            return []
        if ring and ring[0].event_id is not None and ring[0].event_id <= after + 1:
            self.metrics.replays.labels(source="memory").inc()
            return [
                event for event in ring if event.event_id is not None and event.event_id > after
            ]
        try:
            async with asyncio.timeout(self.replay_deadline):
                async with self._replay_slots, self.db.read() as session:
                    rows = await outbox.events_after(
                        session, branch_id=branch_id, after=after, limit=self.replay_window
                    )
        except (TimeoutError, Unavailable):
            # Over the deadline, or the database itself gave up first
            # (DATABASE_TIMEOUT): either way, "come back later" with jitter.
            self.metrics.replays.labels(source="refused").inc()
            raise Overloaded("replay could not be served in time") from None
        self.metrics.replays.labels(source="database").inc()
        return [Event(branch_id, row.kind, row.data.encode(), row.id) for row in rows]

    async def oldest_retained(self, branch_id: int) -> int | None:
        async with self.db.read() as session:
            return await outbox.oldest_id(session, branch_id=branch_id)

    # -- delivery --------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        branch = self._branch(event.branch_id)
        if event.event_id is None:
            self._deliver(branch, event)
            return
        if branch.delivered is None:
            branch.delivered = event.event_id - 1
        if event.event_id <= branch.delivered:
            return  # already delivered (a gap fill and the live path raced)
        if event.event_id == branch.delivered + 1:
            self._deliver(branch, event)
            self._drain_pending(branch)
            return
        branch.pending[event.event_id] = event
        if branch.gap_task is None or branch.gap_task.done():
            branch.gap_task = asyncio.get_running_loop().create_task(
                self._fill_gap(event.branch_id)
            )

    def _deliver(self, branch: _Branch, event: Event) -> None:
        if event.event_id is not None:
            branch.ring.append(event)
            branch.delivered = event.event_id
        elif event.kind == PRESENCE and branch.subscribers:
            self._coalesce_presence(branch, event)
            return
        self._push_all(branch, event)

    @staticmethod
    def _push_all(branch: _Branch, event: Event) -> None:
        copy = event.owner_copy
        if copy is None:
            Broker._push_to(tuple(branch.subscribers), event)
            return
        owner = event.owner
        Broker._push_to([sub for sub in branch.subscribers if sub.user_id != owner], event)
        Broker._push_to([sub for sub in branch.subscribers if sub.user_id == owner], copy)

    @staticmethod
    def _push_to(subscribers: Sequence[Subscriber], event: Event) -> None:
        """The fan-out loop: per stream, one direct socket write or one queue append."""
        frame, event_id, chunk = event.frame, event.event_id, event.chunk
        for sub in subscribers:
            try:
                writer = sub.writer  # inlined fast path of Subscriber.push
                if writer is None or not writer(chunk):
                    sub.push(frame, event_id, chunk)
            except Exception:
                _cut_off(sub)

    def _coalesce_presence(self, branch: _Branch, event: Event) -> None:
        """Deliver only the newest ``presence`` of a burst (each is the complete list).

        Every join and leave publishes one, so N streams connecting at once
        (a deploy, a reconnect storm) would otherwise cost N² writes. The
        wait grows with the audience: a small branch sees changes within
        ``PRESENCE_MIN_WAIT``, a branch of 10,000 within about a second.
        """
        pending = branch.presence is not None
        branch.presence = event
        if pending:
            return
        wait = min(PRESENCE_MAX_WAIT, max(PRESENCE_MIN_WAIT, len(branch.subscribers) * 1e-4))
        asyncio.get_running_loop().call_later(wait, self._flush_presence, branch)

    def _flush_presence(self, branch: _Branch) -> None:
        event, branch.presence = branch.presence, None
        if event is not None:
            self._push_all(branch, event)

    def _drain_pending(self, branch: _Branch) -> None:
        while branch.delivered is not None and branch.delivered + 1 in branch.pending:
            self._deliver(branch, branch.pending.pop(branch.delivered + 1))

    async def _fill_gap(self, branch_id: int, wait: float = GAP_WAIT) -> None:
        branch = self._branch(branch_id)
        for _ in range(GAP_ATTEMPTS):
            await asyncio.sleep(wait)
            if not branch.pending or branch.delivered is None:
                return
            try:
                await self._read_missing(branch_id, branch)
            except Exception:
                log.exception("reading missing events of branch %s failed", branch_id)
            if not branch.pending:
                return
        # The outbox no longer has the missing events (pruned): tell every
        # stream to reload rather than deliver with a hole.
        log.warning("branch %s: gap could not be filled; asking streams to resync", branch_id)
        branch.delivered = min(branch.pending) - 1
        self._deliver(branch, Event.of(branch_id, SYNC_REQUIRED, {"reason": "gap"}))
        self._drain_pending(branch)

    async def _read_missing(self, branch_id: int, branch: _Branch) -> None:
        assert branch.delivered is not None
        async with self.db.read() as session:
            rows = await outbox.events_after(
                session, branch_id=branch_id, after=branch.delivered, limit=self.replay_window
            )
        for row in rows:
            self._on_event(Event(branch_id, row.kind, row.data.encode(), row.id))

    def _on_lost(self) -> None:
        """Redis is gone: locks and presence are unknown until it is back (then ``state``)."""
        for branch_id, branch in list(self._branches.items()):
            if branch.subscribers:
                self._deliver(branch, Event.of(branch_id, STATE, unavailable_state()))

    async def _on_resubscribe(self) -> None:
        """The backend may have dropped events: read them, resend state."""
        for branch_id, branch in list(self._branches.items()):
            if branch.delivered is not None:
                with contextlib.suppress(Exception):
                    await self._read_missing(branch_id, branch)
            if branch.subscribers and self.state_provider is not None:
                state = await self.state_provider(branch_id)
                self._deliver_state(branch_id, branch, state)

    def _deliver_state(self, branch_id: int, branch: _Branch, state: dict[str, Any]) -> None:
        """``state`` as each user may see it: one encoding per user, not per stream."""
        view = self.state_view
        if view is None:
            self._deliver(branch, Event.of(branch_id, STATE, state))
            return
        by_user: dict[int, list[Subscriber]] = {}
        for sub in branch.subscribers:
            by_user.setdefault(sub.user_id, []).append(sub)
        for user_id, subscribers in by_user.items():
            self._push_to(subscribers, Event.of(branch_id, STATE, view(state, user_id)))

    # -- heartbeats ------------------------------------------------------------

    async def heartbeat(self) -> int:
        """One heartbeat frame per branch, the same bytes to each subscriber.

        Sent ``HEARTBEAT_SLICE`` streams at a time. An event delivered between
        two slices may leave later streams a heartbeat whose ``last_event_id``
        is behind what they have; clients only act on one that is ahead.
        """
        # Milliseconds are all a client's clock check needs; every byte of an
        # idle stream's heartbeat is paid by every stream, every interval.
        now = round(time.time(), 3)
        sent = 0
        for branch_id, branch in list(self._branches.items()):
            subscribers = tuple(branch.subscribers)
            if not subscribers:
                continue
            payload = {"server_time": now, "last_event_id": str(branch.delivered or 0)}
            event = Event.of(branch_id, HEARTBEAT, payload)
            for start in range(0, len(subscribers), HEARTBEAT_SLICE):
                if sent:
                    await asyncio.sleep(0)
                self._push_to(subscribers[start : start + HEARTBEAT_SLICE], event)
                sent += min(HEARTBEAT_SLICE, len(subscribers) - start)
        return sent


def _cut_off(sub: Subscriber) -> None:
    """Close one stream whose delivery raised; the others and the publisher never see it.

    The publisher may be a PATCH that has already committed: its 200 must not
    turn into a 500 because one connection broke (docs/protocol.md, "The event
    stream": the client reconnects and resumes from its last id).
    """
    log.exception("delivery to a stream of branch %s failed; closing it", sub.branch_id)
    try:
        sub.close("failed")
    except Exception:
        log.exception("closing the failed stream raised too")


def goodbye_frame(reason: str, retry_ms: tuple[int, int]) -> bytes:
    """``goodbye`` with one jittered delay, in its JSON and as the SSE ``retry:`` field.

    A standard EventSource never reads the JSON: without the field it would
    come back after the stream's opening ``retry: 1000``, every client at once.
    """
    jittered = random.randint(*retry_ms)
    frame = encode(GOODBYE, dumps({"reason": reason, "retry_ms": jittered}))
    return b"retry: %d\n" % jittered + frame
