"""One open stream's mailbox.

The broker pushes already-encoded frames; the stream's own request task
drains them. No task and no unbounded queue per subscriber: a bounded deque
and an ``asyncio.Event``. A subscriber whose deque is full is closed with
reason ``slow`` — it reconnects and resumes from its last event id, which is
cheaper for everyone than letting it hold the others back or grow memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

DEFAULT_MAX_FRAMES = 512


class Subscriber:
    __slots__ = (
        "_frames",
        "_on_slow",
        "_wake",
        "branch_id",
        "client_id",
        "close_reason",
        "final_frame",
        "max_frames",
        "principal_key",
        "user_id",
    )

    def __init__(
        self,
        *,
        branch_id: int,
        user_id: int,
        client_id: str,
        principal_key: tuple[str, int],
        max_frames: int = DEFAULT_MAX_FRAMES,
        on_slow: Callable[[int], None] | None = None,
    ) -> None:
        self.branch_id = branch_id
        self.user_id = user_id
        self.client_id = client_id
        # ("session", id) or ("token", id): what to re-check for revocation.
        self.principal_key = principal_key
        self.max_frames = max_frames
        self._frames: deque[tuple[int | None, bytes]] = deque()
        self._wake = asyncio.Event()
        self._on_slow = on_slow
        self.close_reason: str | None = None
        # Written after the queue drains, then the stream ends (e.g. goodbye).
        self.final_frame: bytes | None = None

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def push(self, frame: bytes, event_id: int | None = None) -> None:
        if self.close_reason is not None:
            return
        if len(self._frames) >= self.max_frames:
            if self._on_slow is not None:
                self._on_slow(len(self._frames) + 1)  # everything queued, and this one
            self.close("slow")
            return
        self._frames.append((event_id, frame))
        self._wake.set()

    def close(self, reason: str, final_frame: bytes | None = None) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self.final_frame = final_frame
            if reason == "slow":
                # Nothing queued will help a client that will resume anyway.
                self._frames.clear()
        self._wake.set()

    def drain(self) -> list[tuple[int | None, bytes]]:
        frames = list(self._frames)
        self._frames.clear()
        self._wake.clear()
        return frames

    async def wait(self) -> None:
        if not self._frames and self.close_reason is None:
            await self._wake.wait()
