"""Fan-out of events to the open streams of this process.

The backend (``memory://`` or ``redis://``) only carries events between
processes. ``Broker`` is the front that makes delivery exact, one job per
module, in the order an event meets them:

* ``ordering`` — durable events in id order, each once; gaps read from the outbox;
* ``replay`` — the ring of recent events, and catching a resuming stream up
  (from the ring, or the outbox through a bounded queue with a deadline);
* ``coalesce`` — only the newest ``presence`` of a burst is delivered;
* ``fanout`` — the same bytes to every stream of the branch, each stream on
  its own: one that fails is closed alone, the publisher never sees it;
* ``registry`` — which streams are open, by branch (``subscribe``);
* ``heartbeat`` — heartbeats in slices; ``goodbye`` — closing streams on shutdown.

docs/architecture.md, "Alice changes a customer's name; Bob sees it",
steps 6 and 7, follows one edit through them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from types import TracebackType
from typing import Any

from ...storage.db import Database
from ..backends import by_scheme
from ..events import PRESENCE, STATE, Event
from ..live import unavailable_state
from ..metrics import Metrics
from . import fanout
from .base import BrokerBackend
from .coalesce import PresenceCoalescer
from .goodbye import SHUTDOWN_RETRY_MS, goodbye_frame, say_goodbye
from .heartbeat import send_heartbeats
from .memory import MemoryBrokerBackend
from .ordering import Ordering
from .registry import Registry
from .replay import (
    REPLAY_CONCURRENCY,
    REPLAY_DEADLINE,
    REPLAY_MAX_PENDING,
    RING_SIZE,
    CatchUp,
    Overloaded,
    Replay,
    Ring,
)
from .subscriber import Subscriber

__all__ = [
    "Broker",
    "CatchUp",
    "Overloaded",
    "Subscriber",
    "Subscription",
    "goodbye_frame",
    "make_broker_backend",
]

log = logging.getLogger(__name__)

StateProvider = Callable[[int], Awaitable[dict[str, Any]]]
StateView = Callable[[dict[str, Any], int], dict[str, Any]]


def make_broker_backend(url: str | None) -> BrokerBackend:
    return by_scheme(url, package=__name__, memory=MemoryBrokerBackend, redis="RedisBrokerBackend")


class Broker:
    def __init__(
        self,
        backend: BrokerBackend,
        *,
        db: Database,
        metrics: Metrics,
        ring_size: int = RING_SIZE,
        replay_window: int = 10000,
        replay_concurrency: int = REPLAY_CONCURRENCY,
        replay_max_pending: int = REPLAY_MAX_PENDING,
        replay_deadline: float = REPLAY_DEADLINE,
    ) -> None:
        self.backend = backend
        self.db = db
        self.metrics = metrics
        self.registry = Registry(metrics)
        self.ordering = Ordering(db, deliver=self._deliver, window=replay_window)
        self.replay = Replay(
            db,
            self.ordering,
            metrics,
            ring=Ring(ring_size),
            window=replay_window,
            concurrency=replay_concurrency,
            max_pending=replay_max_pending,
            deadline=replay_deadline,
        )
        self.coalescer = PresenceCoalescer(self._fan_out)
        # One bound method for every subscriber, not one per stream.
        self.count_slow = self._count_slow
        self._direct = metrics.deliveries.labels(path="direct")
        self._queued = metrics.deliveries.labels(path="queued")
        # Set by the app once locks and presence exist (they publish through us):
        # the branch's live state after a re-subscription, and what of it one
        # user may see (their own locks' client ids only).
        self.state_provider: StateProvider | None = None
        self.state_view: StateView | None = None
        self.shutting_down = False

    # -- lifecycle -------------------------------------------------------------

    async def start(self) -> None:
        await self.backend.connect(self._on_event, self._on_resubscribe, self._on_lost)

    async def stop(self) -> None:
        await self.ordering.stop()
        await self.backend.disconnect()

    def begin_shutdown(self, retry_ms: tuple[int, int] = SHUTDOWN_RETRY_MS) -> int:
        """Say goodbye to every stream, each with its own jittered retry."""
        self.shutting_down = True
        return say_goodbye(self.registry.all(), "shutdown", retry_ms)

    # -- publishing ------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        """Hand ``event`` to every process; never raises for a delivery that failed."""
        self.metrics.events_published.labels(kind=event.kind).inc()
        await self.backend.publish(event)

    async def publish_ephemeral(
        self, branch_id: int, kind: str, payload: Any, *, owner: tuple[int, Any] | None = None
    ) -> None:
        """``owner=(user_id, payload)``: that user's streams get their own copy (``Event``)."""
        await self.publish(Event.of(branch_id, kind, payload, owner=owner))

    # -- streams ---------------------------------------------------------------

    def subscribe(self, sub: Subscriber) -> Subscription:
        """``async with broker.subscribe(sub):`` — ``sub`` gets the branch's events inside."""
        return Subscription(self, sub)

    def _count_slow(self, dropped: int) -> None:
        """A stream was cut off for not keeping up, ``dropped`` frames with it."""
        self.metrics.slow_subscriber_disconnects.inc()
        self.metrics.events_dropped.inc(dropped)

    def subscribers(self) -> list[Subscriber]:
        return self.registry.all()

    def close(self, sub: Subscriber, reason: str) -> None:
        """End one stream (it leaves through its own ``async with``); never raises."""
        fanout.close(sub, reason)

    def head(self, branch_id: int) -> int:
        return self.replay.head(branch_id)

    async def catch_up(self, branch_id: int, resume: str | None) -> CatchUp:
        """What a stream resuming from ``resume`` missed; ``Overloaded`` if not now."""
        return await self.replay.catch_up(branch_id, resume)

    async def heartbeat(self) -> int:
        return await send_heartbeats(self.registry.branches(), self.head)

    # -- from the backend: every event published anywhere ------------------------

    def _on_event(self, event: Event) -> None:
        if event.durable:
            self.ordering.accept(event)  # calls _deliver, in id order
        else:
            self._deliver(event)

    def _deliver(self, event: Event) -> None:
        if event.durable:
            self.replay.ring.append(event)
        elif event.kind == PRESENCE:
            audience = len(self.registry.of(event.branch_id))
            if audience:
                self.coalescer.hold(event, audience=audience)  # calls _fan_out, later
            return
        self._fan_out(event)

    def _fan_out(self, event: Event) -> None:
        subscribers = self.registry.of(event.branch_id)
        if not subscribers:
            return
        direct = fanout.push_event(subscribers, event)
        self._count(direct, len(subscribers) - direct)

    def _count(self, direct: int, queued: int) -> None:
        if direct:
            self._direct.inc(direct)
        if queued:
            self._queued.inc(queued)

    def _on_lost(self) -> None:
        """Redis is gone: locks and presence are unknown until it is back (then ``state``)."""
        for branch_id, _subscribers in list(self.registry.branches()):
            self._fan_out(Event.of(branch_id, STATE, unavailable_state()))

    async def _on_resubscribe(self) -> None:
        """The backend may have dropped events: read them, then resend the live state."""
        for branch_id in self.ordering.branches():
            try:
                await self.ordering.catch_up(branch_id)
            except Exception:
                # The branch's next gap, or the next re-subscription, reads them again.
                log.exception("reading missed events of branch %s failed", branch_id)
        if self.state_provider is None:
            return
        for branch_id, subscribers in list(self.registry.branches()):
            self._send_state(branch_id, subscribers, await self.state_provider(branch_id))

    def _send_state(
        self, branch_id: int, subscribers: Collection[Subscriber], state: dict[str, Any]
    ) -> None:
        """``state`` as each user may see it: one encoding per user, not per stream."""
        view = self.state_view
        if view is None:
            self._fan_out(Event.of(branch_id, STATE, state))
            return

        def for_user(user_id: int) -> Event:
            return Event.of(branch_id, STATE, view(state, user_id))

        direct = fanout.push_per_user(subscribers, for_user)
        self._count(direct, len(subscribers) - direct)


class Subscription:
    """One stream's registration: registered on entry, gone on exit, whatever happened inside.

    Modelled on broadcaster's ``Broadcast.subscribe``, as a small class rather
    than a generator: an open stream holds it for hours, and a suspended
    generator costs three times the memory (docs/performance.md).
    """

    __slots__ = ("_broker", "subscriber")

    def __init__(self, broker: Broker, subscriber: Subscriber) -> None:
        self._broker = broker
        self.subscriber = subscriber

    async def __aenter__(self) -> Subscriber:
        # Before registering: the branch's head must be known for the stream's replay.
        await self._broker.ordering.know_head(self.subscriber.branch_id)
        self._broker.registry.add(self.subscriber)
        return self.subscriber

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._broker.registry.discard(self.subscriber)
