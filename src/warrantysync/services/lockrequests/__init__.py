"""Asking for a field someone else holds (docs/protocol.md, "Asking for a locked field").

``ask`` takes a free field at once, or stores a request and tells the
holder (``lock-requested``). The holder's tab answers ``release`` (the lock
passes to the asker in one atomic step, ``LockManager.transfer``) or
``keep``. The sweep (``run``, on every node) ends the requests nobody
answered: once a request is ``timeout`` seconds old *and* the holder has
shown no work in the field (no save, no typing, see ``Lock.active_at``) for
``timeout`` seconds, the lock passes to the asker, so a holder who keeps
typing is never interrupted, and a holder whose tab is gone loses nothing
they typed (it was saved) while the asker waits no longer than needed. A
request whose lock went away meanwhile ends with ``lock_gone``: the asker's
tab then simply takes the field.

Every end is announced once, as ``lock-request-answered`` with ``answer``
one of ``released``, ``kept``, ``timeout``, ``lock_gone``, ``withdrawn``
(the asker's tab had left the branch).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Literal

from ...errors import Forbidden, LockGone, NotFound, RequestPending, Unavailable
from ..backends import by_scheme
from ..events import LOCK_REQUEST_ANSWERED, LOCK_REQUESTED
from ..locks import Attending, Lock, LockManager, Owner, Publish
from ..metrics import Metrics
from .base import LockRequest, LockRequestBackend
from .memory import MemoryLockRequestBackend

__all__ = [
    "LockRequest",
    "LockRequestBackend",
    "LockRequests",
    "MemoryLockRequestBackend",
    "make_lock_request_backend",
]

logger = logging.getLogger(__name__)

Answer = Literal["release", "keep"]
SWEEP_EVERY = 0.25


def make_lock_request_backend(url: str | None) -> LockRequestBackend:
    return by_scheme(
        url, package=__name__, memory=MemoryLockRequestBackend, redis="RedisLockRequestBackend"
    )


class LockRequests:
    def __init__(
        self,
        backend: LockRequestBackend,
        *,
        locks: LockManager,
        publish: Publish,
        timeout: float,
        attending: Attending | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.backend = backend
        self._metrics = metrics
        self.locks = locks
        self.timeout = timeout
        self._publish = publish
        self._attending = attending
        self._clock = clock

    async def ask(
        self, *, case_id: int, branch_id: int, field: str, asker: Owner
    ) -> Lock | LockRequest:
        """The lock itself when the field is free (or already the asker's), else the request.

        Refused with ``RequestPending`` when someone else already asks for the field.
        """
        held = await self.locks.get(case_id=case_id, field=field)
        if held is None or held.owned_by(asker.user_id, asker.client_id):
            return await self.locks.acquire(
                case_id=case_id, branch_id=branch_id, field=field, owner=asker
            )
        now = self._clock()
        proposed = LockRequest(
            id=secrets.token_urlsafe(12),
            case_id=case_id,
            branch_id=held.branch_id,
            field=field,
            asker=asker,
            holder=held.owner,
            asked_at=now,
            due_at=now + self.timeout,
        )
        pending = await self.backend.add(proposed)
        if pending.id != proposed.id:
            if pending.asker == asker:
                return pending  # asked twice: still the one request
            raise RequestPending(
                f"{pending.asker.name} already asks {pending.holder.name} for {field}",
                request=pending.seen_by(asker.user_id),
            )
        await self._send(pending, LOCK_REQUESTED, {})
        return pending

    async def answer(
        self, *, request_id: str, user_id: int, client_id: str | None, answer: Answer
    ) -> dict[str, Any]:
        """The holder's tab answers; returns the request with its ``answer``.

        ``NotFound``: no such pending request (already answered or timed
        out). ``Forbidden``: the caller is not the tab that holds the lock.
        ``LockGone``: the holder no longer holds it (the request ends too).
        """
        request = await self.backend.get(request_id)
        if request is None:
            raise NotFound("no such request: it was answered, timed out or withdrawn")
        if (request.holder.user_id, request.holder.client_id) != (user_id, client_id):
            raise Forbidden("only the tab holding the lock answers this request")
        taken = await self.backend.take(request_id)
        if taken is None:
            raise NotFound("no such request: it was answered, timed out or withdrawn")
        if answer == "release":
            moved = await self.locks.transfer(
                case_id=taken.case_id, field=taken.field, holder=taken.holder, to=taken.asker
            )
            outcome = "released" if moved is not None else "lock_gone"
        else:
            held = await self.locks.get(case_id=taken.case_id, field=taken.field)
            still = held is not None and held.owned_by(user_id, taken.holder.client_id)
            outcome = "kept" if still else "lock_gone"
        await self._ended(taken, outcome)
        if outcome == "lock_gone":
            raise LockGone(f"{taken.field}: you no longer hold this lock", field=taken.field)
        return {**taken.seen_by(user_id), "answer": outcome}

    async def sweep(self) -> int:
        """End what is due: lapsed holders and idle holders past the timeout; returns how many."""
        ended = 0
        for request in await self.backend.pending():
            outcome = await self._due(request)
            if outcome is None or await self.backend.take(request.id) is None:
                continue
            if outcome == "timeout":
                moved = await self.locks.transfer(
                    case_id=request.case_id,
                    field=request.field,
                    holder=request.holder,
                    to=request.asker,
                )
                if moved is None:
                    outcome = "lock_gone"
            await self._ended(request, outcome)
            ended += 1
        return ended

    async def _due(self, request: LockRequest) -> str | None:
        now = self._clock()
        held = await self.locks.get(case_id=request.case_id, field=request.field)
        if held is None or not held.owned_by(request.holder.user_id, request.holder.client_id):
            return "lock_gone"
        idle_since = max(held.active_at, held.acquired_at)
        if now < request.due_at or now - idle_since < self.timeout:
            return None
        if self._attending is not None and not await self._attending(
            request.branch_id, request.asker.user_id, request.asker.client_id
        ):
            return "withdrawn"
        return "timeout"

    async def run(self, stop: asyncio.Event) -> None:
        """Sweep every ``SWEEP_EVERY`` s until ``stop`` is set (the app's lifespan starts it)."""
        down = False
        while not stop.is_set():
            try:
                await self.sweep()
            except Unavailable as exc:
                if not down:
                    logger.warning("lock request sweep paused: %s", exc.message)
                down = True
            except Exception:
                logger.exception("lock request sweep failed")
            else:
                down = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_EVERY):
                    await stop.wait()

    async def close(self) -> None:
        await self.backend.close()

    async def _ended(self, request: LockRequest, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.lock_requests.labels(answer=outcome).inc()
        await self._send(request, LOCK_REQUEST_ANSWERED, {"answer": outcome})

    async def _send(self, request: LockRequest, kind: str, extra: dict[str, Any]) -> None:
        """To everyone; the holder's user gets the holder's client id (which tab is asked)."""
        payload = {"request": request.seen_by(None), **extra}
        own = {"request": request.public(), **extra}
        try:
            await self._publish(
                request.branch_id, kind, payload, owner=(request.holder.user_id, own)
            )
        except Exception:
            logger.exception("could not publish %s to branch %s", kind, request.branch_id)
