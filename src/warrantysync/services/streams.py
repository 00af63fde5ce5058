"""One SSE stream's life, as DESIGN §4 orders it.

``retry`` → subscribe (live events buffer in the subscriber) → replay from the
resume id (ring or outbox) → ``ready`` carrying the id the client is caught
up to → buffered events not already replayed → live events. Because the
subscriber is registered before the replay reads, nothing committed during
the replay can slip between the two; duplicates are dropped by id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from ..errors import Unavailable
from ..ids import parse_id
from ..jsonutil import dumps
from ..storage import outbox
from .accounts import Principal
from .broker import Broker, Overloaded, goodbye_frame
from .broker.subscriber import Subscriber
from .events import READY, SYNC_REQUIRED, encode, retry_frame
from .live import live_state
from .locks import LockManager
from .presence import Presence
from .rowpresence import RowPresence

RETRY_MS = 1000
OVERLOAD_RETRY_MS = (2000, 10000)


@dataclass(frozen=True, slots=True)
class StreamConfig:
    heartbeat_ms: int
    lock_ttl_ms: int
    replay_window: int
    max_frames: int = 512


class Stream:
    def __init__(
        self,
        *,
        broker: Broker,
        locks: LockManager,
        presence: Presence,
        config: StreamConfig,
        principal: Principal,
        branch_id: int,
        client_id: str,
        resume: str | None,
        rows: RowPresence | None = None,
    ) -> None:
        self.broker = broker
        self.locks = locks
        self.presence = presence
        self.config = config
        self.principal = principal
        self.branch_id = branch_id
        self.client_id = client_id
        self.resume = resume
        self.rows = rows
        key = (
            ("session", principal.session_id)
            if principal.session_id is not None
            else ("token", principal.token_id or 0)
        )
        self.subscriber = Subscriber(
            branch_id=branch_id,
            user_id=principal.user_id,
            client_id=client_id,
            principal_key=key,
            max_frames=config.max_frames,
            on_slow=self._count_slow,
        )
        self._opened = False
        self._caught_up = 0

    def _count_slow(self, dropped: int) -> None:
        self.broker.metrics.slow_subscriber_disconnects.inc()
        self.broker.metrics.events_dropped.inc(dropped)

    async def open(self, *, max_streams: int | None = None) -> None:
        """Count the stream (refused at the user's cap), then subscribe."""
        await self.presence.join(
            branch_id=self.branch_id,
            user_id=self.principal.user_id,
            name=self.principal.name,
            client_id=self.client_id,
            max_streams=max_streams,
        )
        self._opened = True
        try:
            await self.broker.subscribe(self.subscriber)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if not self._opened:
            return
        self._opened = False
        self.broker.unsubscribe(self.subscriber)
        await self.presence.leave(
            branch_id=self.branch_id, user_id=self.principal.user_id, client_id=self.client_id
        )

    async def frames(self) -> AsyncGenerator[bytes, None]:
        """Everything to write, in order; batches what arrived together."""
        opening, live = await self.opening()
        yield opening
        if not live:
            return
        sub = self.subscriber
        while True:
            await sub.wait()
            batch, finished = self.take()
            if batch:
                yield batch
            if finished:
                return

    async def opening(self) -> tuple[bytes, bool]:
        """``retry``, the replay and ``ready`` in one write; False: the stream ends there."""
        retry = retry_frame(RETRY_MS)
        try:
            self._caught_up, head_frames = await self._catch_up()
        except (Overloaded, Unavailable):
            return retry + goodbye_frame("overloaded", OVERLOAD_RETRY_MS), False
        return retry + b"".join(head_frames) + await self._ready(self._caught_up), True

    def take(self) -> tuple[bytes, bool]:
        """What the subscriber queued (minus what the replay already sent); True: ended."""
        sub = self.subscriber
        caught_up = self._caught_up
        batch = [
            frame for event_id, frame in sub.drain() if event_id is None or event_id > caught_up
        ]
        if sub.final_frame is not None:
            batch.append(sub.final_frame)
            sub.final_frame = None
        return b"".join(batch), sub.closed

    async def _catch_up(self) -> tuple[int, list[bytes]]:
        """Replay after the resume id; returns (caught-up id, frames to send)."""
        head = self.broker.head(self.branch_id)
        if self.resume is None:
            return head, []
        resume = parse_id(self.resume)
        if resume is not None and resume > head:
            head = await self._db_head()
        if resume is None or resume > head or head - resume > self.config.replay_window:
            return head, [_sync_required("resume id unknown or too old")]
        events = await self.broker.replay_after(self.branch_id, resume)
        expected_first = resume + 1
        if events and events[0].event_id != expected_first:
            return self.broker.head(self.branch_id), [_sync_required("events no longer retained")]
        if not events and resume < head:
            oldest = await self.broker.oldest_retained(self.branch_id)
            if oldest is None or oldest > expected_first:
                return head, [_sync_required("events no longer retained")]
        caught_up = events[-1].event_id if events else resume
        assert caught_up is not None
        return caught_up, [event.frame for event in events]

    async def _db_head(self) -> int:
        async with self.broker.db.read() as session:
            return await outbox.head(session, branch_id=self.branch_id)

    async def _ready(self, caught_up: int) -> bytes:
        state = await live_state(
            locks=self.locks,
            presence=self.presence,
            branch_id=self.branch_id,
            seen_by=self.principal.user_id,
            rows=self.rows,
        )
        payload: dict[str, Any] = {
            "client_id": self.client_id,
            "last_event_id": str(caught_up),
            **state,
            "heartbeat_ms": self.config.heartbeat_ms,
            "lock_ttl_ms": self.config.lock_ttl_ms,
            "server_time": time.time(),
        }
        return encode(READY, dumps(payload), caught_up)


def _sync_required(reason: str) -> bytes:
    return encode(SYNC_REQUIRED, dumps({"reason": reason}))
