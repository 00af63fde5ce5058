"""Field locks: who may type into which cell, with TTL, events and metrics.

``LockManager`` holds the policy (token minting, TTL, who may release what,
the order of write checks, which events go out); a ``LockBackend`` only
stores, each of its methods one atomic step. Backends are chosen by URL
scheme with ``make_lock_backend``.

Every release is announced exactly once with ``lock-released`` and a
``reason``: ``released`` (DELETE by the owner), ``forced`` (DELETE by a
manager), ``disconnected`` (the owner's client left the branch), ``expired``
(found by ``sweep``, or displaced by a newer ``acquire`` before the sweep
got there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from ...errors import Forbidden, LockConflict, LockLost, Unavailable
from ..backends import by_scheme
from ..events import LOCK_ACQUIRED, LOCK_RELEASED
from ..metrics import Metrics
from .base import Acquired, Lock, LockBackend, Owner
from .memory import MemoryLockBackend

__all__ = [
    "Acquired",
    "Lock",
    "LockBackend",
    "LockManager",
    "MemoryLockBackend",
    "Owner",
    "Publish",
    "make_lock_backend",
]

logger = logging.getLogger(__name__)

Publish = Callable[[int, str, dict[str, Any]], Awaitable[None]]
"""``publish(branch_id, event_name, payload)``: hand an ephemeral event to the broker."""


class _Stop(Protocol):
    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


def make_lock_backend(url: str | None) -> LockBackend:
    return by_scheme(url, package=__name__, memory=MemoryLockBackend, redis="RedisLockBackend")


class LockManager:
    """Lock policy over a backend.

    ``publish`` sends ephemeral events; a failure to publish is logged, not
    raised, because the lock change itself already happened and ``ready`` /
    ``state`` events carry the truth to every client that reconnects.
    """

    def __init__(
        self,
        backend: LockBackend,
        *,
        ttl: float,
        publish: Publish,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.backend = backend
        self.ttl = ttl
        self._publish = publish
        self._clock = clock
        self._metrics = metrics

    @property
    def sweep_interval(self) -> float:
        return min(0.25, self.ttl / 4)

    async def acquire(self, *, case_id: int, branch_id: int, field: str, owner: Owner) -> Lock:
        """Take or renew the lock; the returned lock carries the token for its owner only."""
        # 192 random bits: unique per acquisition with no counter to lose in a Redis restart.
        proposed = secrets.token_urlsafe(24)
        result: Acquired = await self.backend.acquire(
            case_id=case_id,
            branch_id=branch_id,
            field=field,
            owner=owner,
            token=proposed,
            ttl=self.ttl,
            now=self._clock(),
        )
        if result.displaced is not None:
            await self._announce_release(result.displaced, "expired")
        lock = result.lock
        if not result.granted:
            if self._metrics is not None:
                self._metrics.lock_conflicts.inc()
            raise LockConflict(f"{field} is locked by {lock.owner.name}", lock=lock.public())
        if lock.token == proposed:
            if self._metrics is not None:
                self._metrics.locks_held.inc()
            await self._send(lock.branch_id, LOCK_ACQUIRED, {"lock": lock.public()})
        return lock

    async def release(
        self,
        *,
        case_id: int,
        branch_id: int,
        field: str,
        user_id: int,
        client_id: str | None,
        force: bool = False,
        name: str | None = None,
    ) -> None:
        """Release the caller's lock; ``force`` (a manager) releases anyone's.

        Not locked: nothing happens. Locked by another owner without
        ``force``: ``Forbidden``. ``branch_id`` is the case's branch; events
        go to the branch stored with the lock. A forced release names the
        caller (``user_id``, ``name``) as ``by``, so the holder can say who.
        """
        if force:
            removed = await self.backend.release(
                case_id=case_id, field=field, user_id=None, client_id=None
            )
        elif client_id is None:
            removed = None
        else:
            removed = await self.backend.release(
                case_id=case_id, field=field, user_id=user_id, client_id=client_id
            )
        if removed is None:
            if not force:
                # Only to word the refusal: the delete itself was the atomic compare.
                held = await self.backend.get(case_id=case_id, field=field, now=self._clock())
                if held is not None and not held.owned_by(user_id, client_id):
                    raise Forbidden("you do not hold this lock", lock=held.public())
            return
        if removed.owned_by(user_id, client_id):
            await self._announce_release(removed, "released")
        else:
            await self._announce_release(removed, "forced", by={"id": user_id, "name": name or ""})

    async def check_write(
        self,
        *,
        case_id: int,
        fields: Iterable[str],
        user_id: int,
        client_id: str | None,
        tokens: Mapping[str, str],
    ) -> None:
        """Refuse a write that locks forbid: 423 ``LockConflict`` before 409 ``LockLost``.

        A changed field locked by another owner (another user, another tab
        of the same user, or a request with no client id) is a conflict.
        Then each ``tokens`` entry must be the token of the caller's own
        live lock on that field. Unlocked fields without a token pass.
        """
        wanted = list(dict.fromkeys([*fields, *tokens]))
        locks = await self.backend.get_many(case_id=case_id, fields=wanted, now=self._clock())
        for field in wanted:
            lock = locks.get(field)
            if lock is not None and not lock.owned_by(user_id, client_id):
                if self._metrics is not None:
                    self._metrics.lock_conflicts.inc()
                raise LockConflict(f"{field} is locked by {lock.owner.name}", lock=lock.public())
        for field, token in tokens.items():
            lock = locks.get(field)
            if lock is None or not secrets.compare_digest(lock.token, token):
                raise LockLost(f"{field}: your lock is gone", field=field)

    async def snapshot(self, *, branch_id: int) -> list[dict[str, Any]]:
        """Live locks of the branch as public dicts, for ``ready`` and ``state``."""
        locks = await self.backend.for_branch(branch_id=branch_id, now=self._clock())
        return [lock.public() for lock in sorted(locks, key=lambda x: (x.case_id, x.field))]

    async def release_client(
        self, *, branch_id: int, user_id: int, client_id: str, reason: str = "disconnected"
    ) -> int:
        """Release every lock the client holds on the branch; returns how many."""
        removed = await self.backend.release_owner(
            branch_id=branch_id, user_id=user_id, client_id=client_id
        )
        for lock in removed:
            await self._announce_release(lock, reason)
        return len(removed)

    async def sweep(self) -> int:
        """Release the expired locks (each exactly once across processes); returns how many."""
        expired = await self.backend.claim_expired(now=self._clock())
        for lock in expired:
            await self._announce_release(lock, "expired")
        return len(expired)

    async def run(self, stop: _Stop) -> None:
        """Sweep every ``min(0.25, ttl/4)`` s until ``stop`` is set.

        Runs for the life of the app (start it in the lifespan's task group);
        an expired lock is announced within one interval. A failing sweep is
        logged and retried; the loop only ends on ``stop`` or cancellation.
        """
        backend_down = False
        while not stop.is_set():
            try:
                await self.sweep()
            except Unavailable as exc:
                if not backend_down:
                    logger.warning("lock sweep paused, backend unavailable: %s", exc.message)
                backend_down = True
            except Exception:
                logger.exception("lock sweep failed")
            else:
                if backend_down:
                    logger.info("lock sweep resumed")
                backend_down = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.sweep_interval):
                    await stop.wait()

    async def close(self) -> None:
        await self.backend.close()

    async def _announce_release(
        self, lock: Lock, reason: str, *, by: dict[str, Any] | None = None
    ) -> None:
        if self._metrics is not None:
            self._metrics.locks_held.dec()
        payload = {
            "case_id": lock.case_id,
            "field": lock.field,
            "user": {"id": lock.owner.user_id, "name": lock.owner.name},
            "client_id": lock.owner.client_id,
            "reason": reason,
        }
        if by is not None:
            payload["by"] = by
        await self._send(lock.branch_id, LOCK_RELEASED, payload)

    async def _send(self, branch_id: int, kind: str, payload: dict[str, Any]) -> None:
        try:
            await self._publish(branch_id, kind, payload)
        except Exception:
            logger.exception("could not publish %s to branch %s", kind, branch_id)
