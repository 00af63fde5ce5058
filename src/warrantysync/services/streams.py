"""One SSE stream's life, in the order docs/protocol.md ("The event stream") gives it.

``async with stream:`` counts the stream present (refused at the user's cap)
and subscribes it; leaving the block, however it ends — the client went
away, the request was cancelled, the replay failed, the server shuts down —
unsubscribes and uncounts it. Inside, the response writes ``frames()``:

``retry`` → (subscribed: live events buffer in the subscriber) → the replay
from the resume id (ring or outbox) → ``ready`` carrying the id the client
is caught up to → buffered events not already replayed → live events.
Because the subscriber is registered before the replay reads, nothing
committed during the replay can slip between the two; duplicates are
dropped by id.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from ..errors import TooManyStreams, Unavailable
from ..jsonutil import dumps
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
    """The same for every stream of the app (``Services.stream_config``)."""

    heartbeat_ms: int
    lock_ttl_ms: int
    max_frames: int = 512
    max_streams: int | None = None  # per user, counted by presence; None: no cap
    # The client version ``ready`` carries (web/version.py); None leaves it out.
    version: str | None = None


class Stream:
    """Holds only what the stream still needs while it is open: thousands stay open
    for hours (docs/performance.md), so not the caller's ``Principal`` either."""

    __slots__ = (
        "_attendance",
        "_caught_up",
        "_subscription",
        "broker",
        "config",
        "locks",
        "presence",
        "resume",
        "rows",
        "subscriber",
    )

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
            on_slow=broker.count_slow,
        )
        self._attendance = presence.attend(
            branch_id=branch_id,
            user_id=principal.user_id,
            name=principal.name,
            client_id=client_id,
            max_streams=config.max_streams,
        )
        self._subscription = broker.subscribe(self.subscriber)
        self._caught_up = 0

    async def __aenter__(self) -> Stream:
        """Count the stream (``TooManyStreams`` at the user's cap), then subscribe it."""
        try:
            await self._attendance.__aenter__()
        except TooManyStreams:
            self.broker.metrics.rate_limited.labels(scope="streams").inc()
            raise
        try:
            await self._subscription.__aenter__()
        except BaseException:
            await self._attendance.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._subscription.__aexit__(exc_type, exc, traceback)
        finally:
            await self._attendance.__aexit__(exc_type, exc, traceback)

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
        resume, self.resume = self.resume, None  # needed once
        try:
            caught = await self.broker.catch_up(self.subscriber.branch_id, resume)
        except (Overloaded, Unavailable):
            return retry + goodbye_frame("overloaded", OVERLOAD_RETRY_MS), False
        self._caught_up = caught.caught_up
        if caught.sync_required is not None:
            replayed = encode(SYNC_REQUIRED, dumps({"reason": caught.sync_required}))
        else:
            replayed = b"".join(event.frame for event in caught.events)
        return retry + replayed + await self._ready(caught.caught_up), True

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

    async def _ready(self, caught_up: int) -> bytes:
        sub = self.subscriber
        state = await live_state(
            locks=self.locks,
            presence=self.presence,
            branch_id=sub.branch_id,
            seen_by=sub.user_id,
            rows=self.rows,
        )
        payload: dict[str, Any] = {
            "client_id": sub.client_id,
            "last_event_id": str(caught_up),
            **state,
            "heartbeat_ms": self.config.heartbeat_ms,
            "lock_ttl_ms": self.config.lock_ttl_ms,
            "server_time": time.time(),
        }
        if self.config.version is not None:
            payload["version"] = self.config.version
        return encode(READY, dumps(payload), caught_up)
