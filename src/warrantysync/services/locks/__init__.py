"""Field locks: who may type into which cell, with TTL, events and metrics.

``LockManager`` holds the policy (token minting, TTL, who may release what,
the order of write checks, which events go out); a ``LockBackend`` only
stores, each of its methods one atomic step. Backends are chosen by URL
scheme with ``make_lock_backend``.

Every release is announced exactly once with ``lock-released`` and a
``reason``: ``released`` (DELETE by the owner), ``forced`` (DELETE by a
manager), ``disconnected`` (the owner's client left the branch), ``expired``
(found by ``sweep``, or displaced by a newer ``acquire`` before the sweep
got there), ``transferred`` (handed to someone who asked, ``transfer``; a
``lock-acquired`` for the new holder follows). A renewal is announced with
``lock-renewed``, so everyone knows when the lock now ends and when its
holder last worked in it (``active_at``).

Limits against hoarding (docs/security.md, "Locks"): one user holds at most
``max_per_user`` live locks at a time; a lock whose client has no open
stream on the branch cannot be renewed once it is older than
``renew_grace``; a forced release bars the owner's user from that field for
``force_cooldown`` seconds.

Client ids are not secrets, but nobody needs another user's: a lock shows
its ``client_id`` only to its owner's user (``Lock.seen_by``). Lock events
therefore go out in two copies, the owner's user's streams getting theirs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

from ...errors import (
    Forbidden,
    LockBarred,
    LockConflict,
    LockLost,
    StreamRequired,
    TooManyLocks,
    Unavailable,
)
from ..backends import by_scheme
from ..events import LOCK_ACQUIRED, LOCK_RELEASED, LOCK_RENEWED
from ..metrics import Metrics
from .base import Acquired, Lock, LockBackend, Owner, iso_utc, locks_seen_by
from .memory import MemoryLockBackend

__all__ = [
    "Acquired",
    "Attending",
    "Lock",
    "LockBackend",
    "LockManager",
    "MemoryLockBackend",
    "Owner",
    "Publish",
    "locks_seen_by",
    "make_lock_backend",
]

logger = logging.getLogger(__name__)


class Publish(Protocol):
    """Hand an ephemeral event to the broker.

    ``owner=(user_id, payload)``: that user's streams get ``payload``
    instead (their own client ids in it), everyone else the first one.
    """

    async def __call__(
        self,
        branch_id: int,
        kind: str,
        payload: dict[str, Any],
        *,
        owner: tuple[int, dict[str, Any]] | None = None,
    ) -> None: ...


Attending = Callable[[int, int, str], Awaitable[bool]]
"""``attending(branch_id, user_id, client_id)``: does the client have a stream open on the branch
(or one that closed less than the disconnect grace ago)?"""


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
        max_per_user: int | None = None,
        attending: Attending | None = None,
        renew_grace: float = 0.0,
        force_cooldown: float = 0.0,
    ) -> None:
        """``max_per_user`` None: no cap. ``attending`` None: renewals are never refused."""
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.backend = backend
        self.ttl = ttl
        self.max_per_user = max_per_user
        self.attending = attending
        self.renew_grace = renew_grace
        self.force_cooldown = force_cooldown
        self._publish = publish
        self._clock = clock
        self._metrics = metrics

    @property
    def sweep_interval(self) -> float:
        return min(0.25, self.ttl / 4)

    async def acquire(self, *, case_id: int, branch_id: int, field: str, owner: Owner) -> Lock:
        """Take or renew the lock; the returned lock carries the token for its owner only.

        Refusals, first match wins: ``LockConflict`` (another owner holds
        it), ``StreamRequired`` (a renewal without a stream, see below),
        ``LockBarred`` (a forced release bars the user), ``TooManyLocks``.
        A renewal is refused when the client has no stream open on the
        branch and the lock was acquired more than ``renew_grace`` seconds
        ago; the lock itself stays until it expires or is released.
        """
        # 192 random bits: unique per acquisition with no counter to lose in a Redis restart.
        proposed = secrets.token_urlsafe(24)
        renew_within = None
        if self.attending is not None and not await self.attending(
            branch_id, owner.user_id, owner.client_id
        ):
            renew_within = self.renew_grace
        now = self._clock()
        result: Acquired = await self.backend.acquire(
            case_id=case_id,
            branch_id=branch_id,
            field=field,
            owner=owner,
            token=proposed,
            ttl=self.ttl,
            now=now,
            max_per_user=self.max_per_user,
            renew_within=renew_within,
        )
        if result.displaced is not None:
            await self._announce_release(result.displaced, "expired")
        if not result.granted:
            raise self._refusal(result, field=field, owner=owner, now=now)
        lock = result.lock
        assert lock is not None
        if lock.token == proposed:
            if self._metrics is not None:
                self._metrics.locks_held.inc()
            kind = LOCK_ACQUIRED
        else:
            kind = LOCK_RENEWED
        await self._send(lock, kind, {"lock": lock.seen_by(None)}, {"lock": lock.public()})
        return lock

    async def touch(self, *, case_id: int, field: str, user_id: int, client_id: str) -> bool:
        """The holder works in the field now (types, saves); False if the lock is not theirs."""
        lock = await self.backend.touch(
            case_id=case_id, field=field, user_id=user_id, client_id=client_id, now=self._clock()
        )
        return lock is not None

    async def get(self, *, case_id: int, field: str) -> Lock | None:
        return await self.backend.get(case_id=case_id, field=field, now=self._clock())

    async def transfer(self, *, case_id: int, field: str, holder: Owner, to: Owner) -> Lock | None:
        """Hand ``holder``'s live lock to ``to`` with a fresh token, atomically; None if gone.

        Announced as ``lock-released`` (reason ``transferred``, ``to`` naming
        the new holder) and then ``lock-acquired``. The per-user cap is not
        checked: the holder chose (or the timeout chose) to give it.
        """
        now = self._clock()
        moved = await self.backend.transfer(
            case_id=case_id,
            field=field,
            holder=holder,
            to=to,
            token=secrets.token_urlsafe(24),
            ttl=self.ttl,
            now=now,
        )
        if moved is None:
            return None
        old, new = moved
        await self._announce_release(old, "transferred", to={"id": to.user_id, "name": to.name})
        if self._metrics is not None:
            self._metrics.locks_held.inc()
        await self._send(new, LOCK_ACQUIRED, {"lock": new.seen_by(None)}, {"lock": new.public()})
        return new

    def _refusal(self, result: Acquired, *, field: str, owner: Owner, now: float) -> Exception:
        lock, viewer = result.lock, owner.user_id
        if result.refusal == "locked":
            assert lock is not None
            if self._metrics is not None:
                self._metrics.lock_conflicts.inc()
            return LockConflict(
                f"{field} is locked by {lock.owner.name}", lock=lock.seen_by(viewer)
            )
        wait = max(1, math.ceil((result.until or now) - now))
        if result.refusal == "unattended":
            assert lock is not None
            self._count_refusal(StreamRequired.code)
            return StreamRequired(
                f"{field}: a lock is renewed only for a tab with the branch's event stream "
                f"open (the same X-Client-Id); this one ends at {iso_utc(lock.expires_at)}",
                lock=lock.seen_by(viewer),
            )
        if result.refusal == "barred":
            self._count_refusal(LockBarred.code)
            return LockBarred(
                f"a manager released your lock on {field}; you may take it again in {wait} s",
                retry_after=wait,
                field=field,
                until=iso_utc(result.until or now),
            )
        self._count_refusal(TooManyLocks.code)
        return TooManyLocks(
            f"you already hold {self.max_per_user} locks, the most one user may hold at a time;"
            " release one first",
            retry_after=wait,
            limit=self.max_per_user,
        )

    def _count_refusal(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.lock_refusals.labels(reason=reason).inc()

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
        go to the branch stored with the lock. A forced release of another
        user's lock bars that user from the field for ``force_cooldown`` s.
        A forced release names the caller (``user_id``, ``name``) as ``by``, so
        the holder can say who.
        """
        if force:
            now = self._clock()
            removed = await self.backend.force_release(
                case_id=case_id,
                field=field,
                by_user_id=user_id,
                bar_until=now + self.force_cooldown if self.force_cooldown > 0 else None,
                now=now,
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
                    raise Forbidden("you do not hold this lock", lock=held.seen_by(user_id))
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
                raise LockConflict(
                    f"{field} is locked by {lock.owner.name}", lock=lock.seen_by(user_id)
                )
        for field, token in tokens.items():
            lock = locks.get(field)
            if lock is None or not secrets.compare_digest(lock.token, token):
                raise LockLost(f"{field}: your lock is gone", field=field)
        if client_id is not None:
            # A save is work in the field: a request to release it waits (docs/protocol.md,
            # "Asking for a locked field").
            for field in tokens:
                await self.touch(case_id=case_id, field=field, user_id=user_id, client_id=client_id)

    async def snapshot(self, *, branch_id: int) -> list[dict[str, Any]]:
        """Live locks of the branch as public dicts, for ``ready`` and ``state``.

        With every client id: pass them through ``locks_seen_by`` for a user.
        """
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
        self,
        lock: Lock,
        reason: str,
        *,
        by: dict[str, Any] | None = None,
        to: dict[str, Any] | None = None,
    ) -> None:
        if self._metrics is not None:
            self._metrics.locks_held.dec()
        payload = {
            "case_id": lock.case_id,
            "field": lock.field,
            "user": {"id": lock.owner.user_id, "name": lock.owner.name},
            "client_id": None,
            "reason": reason,
        }
        if by is not None:
            payload["by"] = by
        if to is not None:
            payload["to"] = to
        own = {**payload, "client_id": lock.owner.client_id}
        await self._send(lock, LOCK_RELEASED, payload, own)

    async def _send(
        self, lock: Lock, kind: str, payload: dict[str, Any], own: dict[str, Any]
    ) -> None:
        """``payload`` to everyone, ``own`` (with the client id) to the lock's user."""
        try:
            await self._publish(lock.branch_id, kind, payload, owner=(lock.owner.user_id, own))
        except Exception:
            logger.exception("could not publish %s to branch %s", kind, lock.branch_id)
