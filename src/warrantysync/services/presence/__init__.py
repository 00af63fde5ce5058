"""Presence: who has the branch open, and noticing when a tab has left for good.

``Presence`` counts streams through a ``PresenceBackend`` (one atomic call
per change), publishes ``presence`` on every join and leave, and runs the
``DISCONNECT_GRACE`` timer: when a client's last stream on a branch closes
and none reopens within ``grace`` seconds, ``on_client_gone(branch_id,
user_id, client_id)`` runs once (the app releases that client's locks).
The timer lives on the node where the stream closed; before firing it asks
the backend, so a client that reconnected to another node is not "gone".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio

from ...errors import TooManyStreams, Unavailable
from ..backends import by_scheme
from ..events import PRESENCE
from .base import Lapsed, PresenceBackend, Upkeep, Viewer
from .memory import MemoryPresenceBackend

__all__ = [
    "Attendance",
    "Lapsed",
    "MemoryPresenceBackend",
    "Presence",
    "PresenceBackend",
    "Upkeep",
    "Viewer",
    "make_presence_backend",
]

logger = logging.getLogger(__name__)

Publish = Callable[[int, str, dict[str, Any]], Awaitable[None]]
ClientGone = Callable[[int, int, str], Awaitable[None]]

# The most a closing stream waits to be uncounted when the backend hangs.
_LEAVE_TIMEOUT = 5.0
_TOO_MANY_RETRY_AFTER = 5


def make_presence_backend(url: str | None) -> PresenceBackend:
    return by_scheme(
        url, package=__name__, memory=MemoryPresenceBackend, redis="RedisPresenceBackend"
    )


class Presence:
    def __init__(
        self,
        backend: PresenceBackend,
        *,
        publish: Publish,
        grace: float,
        on_client_gone: ClientGone,
    ) -> None:
        self.backend = backend
        self.grace = grace
        self._publish = publish
        self._on_client_gone = on_client_gone
        self._timers: dict[tuple[int, int, str], asyncio.Task[None]] = {}

    async def join(
        self,
        *,
        branch_id: int,
        user_id: int,
        name: str,
        client_id: str,
        max_streams: int | None = None,
    ) -> None:
        """Count a new stream; with ``max_streams`` refuse (``TooManyStreams``) a user at the cap.

        The cap is checked and the stream counted in one backend step, so
        parallel connects cannot overshoot it.
        """
        count = await self.backend.join(
            branch_id=branch_id,
            user_id=user_id,
            name=name,
            client_id=client_id,
            max_user_streams=max_streams,
        )
        if count is None:
            raise TooManyStreams(
                f"too many open streams (at most {max_streams})",
                retry_after=_TOO_MANY_RETRY_AFTER,
            )
        timer = self._timers.pop((branch_id, user_id, client_id), None)
        if timer is not None:
            timer.cancel()
        await self._announce(branch_id)

    async def leave(self, *, branch_id: int, user_id: int, client_id: str) -> None:
        """Uncount a stream; the client's last one on the branch starts the grace timer."""
        left = await self.backend.leave(branch_id=branch_id, user_id=user_id, client_id=client_id)
        key = (branch_id, user_id, client_id)
        if left == 0 and key not in self._timers:
            self._start_grace(key)
        await self._announce(branch_id)

    def _start_grace(self, key: tuple[int, int, str]) -> None:
        branch_id, user_id, client_id = key
        self._timers[key] = asyncio.get_running_loop().create_task(
            self._grace(key), name=f"presence-grace-{branch_id}-{user_id}-{client_id}"
        )

    def attend(
        self,
        *,
        branch_id: int,
        user_id: int,
        name: str,
        client_id: str,
        max_streams: int | None = None,
    ) -> Attendance:
        """``async with presence.attend(...)``: ``join`` on entry, ``leave`` on exit, however
        the block ends (cancelled included)."""
        return Attendance(self, branch_id, user_id, name, client_id, max_streams)

    async def viewers(self, *, branch_id: int) -> list[dict[str, Any]]:
        """``[{user:{id,name}, clients:n}]`` sorted by name, for events and snapshots."""
        viewers = await self.backend.viewers(branch_id=branch_id)
        viewers.sort(key=lambda v: (v.name.casefold(), v.user_id))
        return [viewer.public() for viewer in viewers]

    async def attending(self, *, branch_id: int, user_id: int, client_id: str) -> bool:
        """The client has a stream open on the branch, or its last one closed within the grace.

        The second half is known only to the node where that stream closed;
        elsewhere such a client counts as gone a little early.
        """
        if (branch_id, user_id, client_id) in self._timers:
            return True
        return (
            await self.backend.client_streams(
                branch_id=branch_id, user_id=user_id, client_id=client_id
            )
            > 0
        )

    @property
    def reachable(self) -> bool:
        """False while the backend knows presence cannot be read (Redis away)."""
        return self.backend.reachable

    async def probe(self) -> bool:
        """Check now (not at the next upkeep) whether presence can be read again."""
        return await self.backend.probe()

    async def streams_of_user(self, user_id: int) -> int:
        return await self.backend.streams_of_user(user_id=user_id)

    async def run(self, stop: asyncio.Event) -> None:
        """Call ``backend.maintain()`` every ``backend.maintain_every`` s until ``stop`` is set.

        Runs for the life of the app (the lifespan starts it). With Redis this
        renews the node's lease and takes over the streams of crashed nodes:
        their branches get ``presence`` and their clients the disconnect grace,
        as if the streams had closed here. The first round runs at once, so a
        node registers before it serves.
        """
        down = False
        while not stop.is_set():
            try:
                upkeep = await self.backend.maintain()
            except Unavailable as exc:
                if not down:
                    logger.warning("presence upkeep paused: %s", exc.message)
                down = True
            except Exception:
                logger.exception("presence upkeep failed")
            else:
                if down:
                    logger.info("presence upkeep resumed")
                down = False
                await self._after_upkeep(upkeep)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.backend.maintain_every):
                    await stop.wait()

    async def _after_upkeep(self, upkeep: Upkeep) -> None:
        for item in upkeep.lapsed:
            key = (item.branch_id, item.user_id, item.client_id)
            if item.remaining == 0 and key not in self._timers:
                self._start_grace(key)
        for branch_id in sorted(upkeep.changed_branches):
            await self._announce(branch_id)

    async def close(self) -> None:
        """Cancel pending grace timers (their clients' locks go by TTL) and close the backend."""
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        await asyncio.gather(*timers, return_exceptions=True)
        await self.backend.close()

    async def _grace(self, key: tuple[int, int, str]) -> None:
        branch_id, user_id, client_id = key
        await asyncio.sleep(self.grace)
        # Past this point a rejoin no longer cancels us: releasing half a client's locks
        # because it came back mid-release would be worse than releasing them all.
        if self._timers.get(key) is asyncio.current_task():
            del self._timers[key]
        try:
            if await self.backend.client_streams(
                branch_id=branch_id, user_id=user_id, client_id=client_id
            ):
                return
            await self._on_client_gone(branch_id, user_id, client_id)
        except Unavailable as exc:
            # Its locks live in Redis too: they go by LOCK_TTL instead.
            logger.warning("client %s on branch %s left: %s", client_id, branch_id, exc.message)
        except Exception:
            logger.exception("releasing client %s on branch %s failed", client_id, branch_id)

    async def _announce(self, branch_id: int) -> None:
        try:
            viewers = await self.viewers(branch_id=branch_id)
            await self._publish(branch_id, PRESENCE, {"viewers": viewers})
        except Unavailable:
            # Nobody can tell who is here; the streams were told so (live_state),
            # and the upkeep announces every changed branch once Redis is back.
            pass
        except Exception:
            logger.exception("could not publish presence to branch %s", branch_id)


class Attendance:
    """One stream counted present for as long as its ``async with`` block runs.

    A small class rather than a generator: an open stream holds it for hours
    (docs/performance.md, "The stream as one async with").
    """

    __slots__ = ("_presence", "branch_id", "client_id", "max_streams", "name", "user_id")

    def __init__(
        self,
        presence: Presence,
        branch_id: int,
        user_id: int,
        name: str,
        client_id: str,
        max_streams: int | None,
    ) -> None:
        self._presence = presence
        self.branch_id = branch_id
        self.user_id = user_id
        self.name = name
        self.client_id = client_id
        self.max_streams = max_streams

    async def __aenter__(self) -> Attendance:
        """Count the stream; ``TooManyStreams`` (nothing counted) for a user at the cap."""
        await self._presence.join(
            branch_id=self.branch_id,
            user_id=self.user_id,
            name=self.name,
            client_id=self.client_id,
            max_streams=self.max_streams,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Shielded and bounded: a cancelled stream is uncounted all the same, and
        # a hanging backend cannot hold its task; a failure never hides the block's own.
        with anyio.move_on_after(_LEAVE_TIMEOUT, shield=True):
            try:
                await self._presence.leave(
                    branch_id=self.branch_id, user_id=self.user_id, client_id=self.client_id
                )
            except Exception:
                logger.exception("uncounting a stream of branch %s failed", self.branch_id)
