"""Fan-out between processes over Redis pub/sub.

One pub/sub connection per process and one channel for every branch: each
node hears every event, and the ``Broker`` front drops what none of its
streams wants (docs/architecture.md, "Alice changes a customer's name; Bob
sees it", step 6). A message is a short ASCII header and the event's JSON as it
goes on the wire::

    b"<branch_id> <event_id or -> <kind> " + data

so the receiving node rebuilds ``Event(branch_id, kind, data, event_id)``
and frames it once for all its streams. An event with an owner copy (see
``Event``) has ``~<owner user id>`` in the id's place and both JSON texts,
one line each (JSON from ``dumps`` never holds a newline)::

    b"<branch_id> ~<owner> <kind> " + data + b"\n" + owner_data

Pub/sub is the fast path only; it forgets whatever a disconnected subscriber
missed. The outbox is the truth, so this module never tries to be reliable:

* The listener reconnects with backoff when its connection drops (or stops
  answering pings). When it drops it calls ``on_lost()`` (the front tells its
  streams that live state is unavailable), and after every re-subscription awaits
  ``on_resubscribe()``: the front then reads the missed durable events from
  the outbox and sends its streams a ``state`` event (locks and presence;
  ephemeral events sent while we were away are gone, the state replaces them).
* ``publish`` never raises. When Redis cannot take the event, the event is
  delivered to this node's own streams directly, the failure is logged and
  counted (``publish_failures``), and other nodes repair from the outbox. For
  that they must hear that something is missing, even in a quiet branch and
  even when only this node lost Redis: the newest durable event of each branch
  that Redis did not take is kept and published again as soon as Redis takes
  events from us (the next publish that works, or our re-subscription). A
  node behind it sees a gap in the branch's ids and reads the rest from the
  outbox; a node that has it already drops it. A save that already committed
  must not fail because the fast path is down (docs/operations.md
  "Durability": acknowledged means durable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from ..events import Event
from ..redisconn import DOWN_ERRORS, KEY_PREFIX, connect, redact
from .base import OnEvent, OnLost, OnResubscribe

__all__ = ["CHANNEL", "RedisBrokerBackend", "decode_message", "encode_message"]

log = logging.getLogger(__name__)

CHANNEL = f"{KEY_PREFIX}:events"
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
PING_EVERY = 1.0  # seconds between pings on an idle subscription
DEAD_AFTER = 5.0  # no message nor pong for this long: the connection is dead
PUBLISH_TIMEOUT = 1.0


def encode_message(event: Event) -> bytes:
    if event.owner is not None and event.owner_copy is not None:
        head = b"%d ~%d %s " % (event.branch_id, event.owner, event.kind.encode())
        return head + event.data + b"\n" + event.owner_copy.data
    event_id = b"-" if event.event_id is None else str(event.event_id).encode()
    return b"%d %s %s " % (event.branch_id, event_id, event.kind.encode()) + event.data


def decode_message(raw: bytes) -> Event:
    """The inverse of ``encode_message``; ``ValueError`` for anything else."""
    branch, event_id, kind, data = raw.split(b" ", 3)
    if event_id.startswith(b"~"):
        data, own = data.split(b"\n", 1)
        copy = Event(int(branch), kind.decode(), own)
        return Event(int(branch), kind.decode(), data, owner=int(event_id[1:]), owner_copy=copy)
    return Event(int(branch), kind.decode(), data, None if event_id == b"-" else int(event_id))


class RedisBrokerBackend:
    def __init__(self, url: str, *, channel: str = CHANNEL) -> None:
        self.url = url
        self.channel = channel
        self.publish_failures = 0
        self.resubscribes = 0
        self._client: Redis | None = None
        self._listener: asyncio.Task[None] | None = None
        self._pubsub: PubSub | None = None
        self._on_event: OnEvent | None = None
        self._on_resubscribe: OnResubscribe | None = None
        self._on_lost: OnLost | None = None
        self._subscribed = False
        self._outage_logged = False
        # branch id -> the newest durable event Redis did not take (see above).
        self._unsent: dict[int, Event] = {}

    # -- lifecycle -------------------------------------------------------------

    async def connect(
        self, on_event: OnEvent, on_resubscribe: OnResubscribe, on_lost: OnLost | None = None
    ) -> None:
        """Subscribe now (so a Redis missing at start is an error), then listen."""
        self._on_event = on_event
        self._on_resubscribe = on_resubscribe
        self._on_lost = on_lost
        self._client = connect(self.url)
        try:
            pubsub = await self._subscribe()
        except DOWN_ERRORS as exc:
            await self._client.aclose()
            self._client = None
            raise RuntimeError(
                f"cannot reach Redis at {redact(self.url)} (WARRANTYSYNC_REDIS_URL): {exc}"
            ) from exc
        self._listener = asyncio.get_running_loop().create_task(
            self._listen(pubsub), name="redis-broker-listener"
        )

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        self._subscribed = False
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def healthy(self) -> bool:
        """Redis answers a PING within a second and our subscription is live."""
        if self._client is None:
            return False
        try:
            async with asyncio.timeout(1.0):
                await self._client.ping()
        except DOWN_ERRORS:
            return False
        return self._subscribed

    # -- publishing ------------------------------------------------------------

    async def publish(self, event: Event) -> None:
        if self._client is None:
            return
        if self._subscribed and await self._send(event):
            if self._unsent:
                await self._publish_unsent()
            return
        # Redis cannot carry it: our own streams still get it now; other nodes
        # read durable events from the outbox, and get `state` for the rest.
        self.publish_failures += 1
        self._keep_unsent(event)
        self._deliver(event)

    async def _send(self, event: Event) -> bool:
        assert self._client is not None
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await self._client.publish(self.channel, encode_message(event))
        except DOWN_ERRORS as exc:
            self._note_outage(f"publishing failed: {exc!r}")
            return False
        return True

    def _keep_unsent(self, event: Event) -> None:
        if event.event_id is None:
            return  # ephemeral: the `state` after re-subscribing replaces it
        kept = self._unsent.get(event.branch_id)
        if kept is None or (kept.event_id or 0) < event.event_id:
            self._unsent[event.branch_id] = event

    async def _publish_unsent(self) -> None:
        """Tell the other nodes what they missed: one event per branch, the newest."""
        unsent, self._unsent = self._unsent, {}
        for event in unsent.values():
            if not await self._send(event):
                self._keep_unsent(event)

    # -- listening -------------------------------------------------------------

    async def _subscribe(self) -> PubSub:
        assert self._client is not None
        pubsub = self._client.pubsub()
        try:
            await pubsub.subscribe(self.channel)
            # The confirmation proves the connection works end to end.
            async with asyncio.timeout(DEAD_AFTER):
                while True:
                    message = await pubsub.get_message(timeout=DEAD_AFTER)
                    if message is None:
                        raise TimeoutError("Redis did not confirm the subscription")
                    if message.get("type") == "subscribe":
                        break
        except BaseException:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            raise
        self._pubsub = pubsub
        self._subscribed = True
        return pubsub

    async def _listen(self, pubsub: PubSub) -> None:
        while True:
            try:
                await self._pump(pubsub)
            except DOWN_ERRORS as exc:
                self._note_outage(f"subscription lost: {exc!r}")
            except Exception:
                log.exception("Redis event listener failed; reconnecting")
            self._subscribed = False
            if self._on_lost is not None:
                try:
                    self._on_lost()
                except Exception:
                    log.exception("announcing the lost subscription failed")
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            pubsub = await self._resubscribe()
            self.resubscribes += 1
            self._outage_logged = False
            log.info("re-subscribed to Redis at %s", redact(self.url))
            if self._unsent:
                await self._publish_unsent()
            if self._on_resubscribe is not None:
                try:
                    await self._on_resubscribe()
                except Exception:
                    log.exception("catching up after re-subscribing failed")

    async def _resubscribe(self) -> PubSub:
        attempt = 0
        while True:
            base = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            await asyncio.sleep(base * random.uniform(0.5, 1.0))
            attempt += 1
            try:
                return await self._subscribe()
            except DOWN_ERRORS:
                continue

    async def _pump(self, pubsub: PubSub) -> None:
        """Deliver messages until the connection fails or stops answering pings."""
        loop = asyncio.get_running_loop()
        last_seen = loop.time()
        next_ping = last_seen + PING_EVERY
        while True:
            message: dict[str, Any] | None = await pubsub.get_message(timeout=PING_EVERY)
            now = loop.time()
            if message is not None:
                last_seen = now
                if message.get("type") == "message":
                    self._dispatch(message["data"])
            if now >= next_ping:
                if now - last_seen > DEAD_AFTER:
                    raise TimeoutError(f"no answer from Redis for {DEAD_AFTER:g} s")
                await pubsub.ping()
                next_ping = now + PING_EVERY

    def _dispatch(self, raw: bytes) -> None:
        try:
            event = decode_message(raw)
        except ValueError:
            log.warning("dropping a malformed message on %s: %r", self.channel, raw[:80])
            return
        self._deliver(event)

    def _deliver(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            log.exception("delivering %s of branch %s failed", event.kind, event.branch_id)

    def _note_outage(self, detail: str) -> None:
        # Once per outage: an unreachable Redis must not flood the log per event.
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "Redis at %s unavailable (%s); events reach other nodes through the outbox"
                " until it is back",
                redact(self.url),
                detail,
            )
