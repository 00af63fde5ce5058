"""One open stream's mailbox.

The broker pushes already-encoded frames. No task and no unbounded queue per
subscriber. Two ways out:

* **direct** — while the stream's socket takes data and nothing is queued,
  ``push`` hands the pre-chunked bytes straight to the stream's ``writer``
  (``web/fastpath.py`` attaches one when the server allows it): one socket write
  per delivery, no task wake-up, no per-connection encoding;
* **queued** — otherwise frames wait in a bounded list and ``poke`` wakes the
  stream's own request task, which drains them in one write.

A subscriber whose list is full is closed with reason ``slow`` — it
reconnects and resumes from its last event id, which is cheaper for everyone
than letting it hold the others back or grow memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..events import chunked

DEFAULT_MAX_FRAMES = 512

# Takes one HTTP chunk; False when the socket cannot take it right now.
Writer = Callable[[bytes], bool]


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
        "poke",
        "principal_key",
        "user_id",
        "writer",
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
        # A list, not a deque: an empty deque costs ~600 bytes, and this one is
        # only ever appended to and taken whole.
        self._frames: list[tuple[int | None, bytes]] = []
        self._wake: asyncio.Event | None = None
        self._on_slow = on_slow
        self.close_reason: str | None = None
        # Written after the queue drains, then the stream ends (e.g. goodbye).
        self.final_frame: bytes | None = None
        # Set by the stream while it is idle and its socket takes direct writes.
        self.writer: Writer | None = None
        # Wakes the stream's task when frames are queued or the subscriber closes.
        self.poke: Callable[[], None] | None = None

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def push(self, frame: bytes, event_id: int | None = None, chunk: bytes | None = None) -> None:
        if self.close_reason is not None:
            return
        writer = self.writer
        if writer is not None and writer(chunked(frame) if chunk is None else chunk):
            return
        if len(self._frames) >= self.max_frames:
            self.close("slow", lost=1)  # everything queued, and this one
            return
        self._frames.append((event_id, frame))
        self._wakeup()

    def close(self, reason: str, final_frame: bytes | None = None, *, lost: int = 0) -> None:
        """End the stream. ``slow`` also drops what is queued (plus ``lost``
        frames already taken out of the queue) and reports that count once."""
        if self.close_reason is None:
            self.close_reason = reason
            self.final_frame = final_frame
            self.writer = None
            if reason == "slow":
                # Nothing queued will help a client that will resume anyway.
                if self._on_slow is not None:
                    self._on_slow(len(self._frames) + lost)
                self._frames.clear()
        self._wakeup()

    def _wakeup(self) -> None:
        # Nothing queued may be overtaken by a later direct write.
        self.writer = None
        if self.poke is not None:
            self.poke()
        elif self._wake is not None:
            self._wake.set()

    def drain(self) -> list[tuple[int | None, bytes]]:
        frames, self._frames = self._frames, []
        if self._wake is not None:
            self._wake.clear()
        return frames

    @property
    def queued(self) -> bool:
        return bool(self._frames)

    async def wait(self) -> None:
        if not self._frames and self.close_reason is None:
            if self._wake is None:
                self._wake = asyncio.Event()
            await self._wake.wait()
