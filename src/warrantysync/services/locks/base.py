"""The lock backend contract.

A backend stores at most one lock per ``(case_id, field)``. Every method is
one atomic step (a dict update here, one Lua script in Redis), so the front
class in ``__init__.py`` never reads a lock, decides, and writes it back:
whatever it needs decided under the lock is decided by the backend.

Time is passed in (``now``, epoch seconds) rather than read by the backend,
so one clock rules a deployment's policy and tests can drive it. A lock
whose ``expires_at <= now`` is *expired*: ``get`` and ``for_branch`` no
longer show it, ``acquire`` may displace it, and until then it waits for
``claim_expired`` to hand it out, exactly once, for its release event.

The limits a lock request must pass (one user's cap, a bar after a forced
release, renewing without a stream) are decided inside ``acquire`` too, in
the same atomic step that takes the lock, so no two nodes can both squeeze
in under a limit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Refusal = Literal["locked", "barred", "too_many", "unattended"]


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a lock: a user in one tab (``client_id``)."""

    user_id: int
    name: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Lock:
    case_id: int
    branch_id: int
    field: str
    owner: Owner
    token: str
    expires_at: float
    acquired_at: float = 0.0  # when this token was granted; renewals keep it
    active_at: float = 0.0  # the holder's last sign of work: taken, a save, typing (``touch``)

    def public(self) -> dict[str, Any]:
        """Lock JSON as its owner's user sees it: never the token.

        Anyone else gets ``seen_by(their user id)``.
        """
        return {
            "case_id": self.case_id,
            "field": self.field,
            "user": {"id": self.owner.user_id, "name": self.owner.name},
            "client_id": self.owner.client_id,
            "expires_at": iso_utc(self.expires_at),
            "active_at": iso_utc(max(self.active_at, self.acquired_at)),
        }

    def seen_by(self, viewer: int | None) -> dict[str, Any]:
        """Lock JSON for user ``viewer``: another user's client id shows as null."""
        public = self.public()
        if viewer != self.owner.user_id:
            public["client_id"] = None
        return public

    def owned_by(self, user_id: int, client_id: str | None) -> bool:
        """True for the same user in the same tab; a request without a client id owns nothing."""
        return (
            client_id is not None
            and self.owner.user_id == user_id
            and self.owner.client_id == client_id
        )

    def is_live(self, now: float) -> bool:
        return self.expires_at > now


def locks_seen_by(locks: list[dict[str, Any]], viewer: int) -> list[dict[str, Any]]:
    """``Lock.seen_by`` for a list of ``Lock.public()`` dicts (snapshots, ``ready``, ``state``)."""
    return [lock if lock["user"]["id"] == viewer else {**lock, "client_id": None} for lock in locks]


@dataclass(frozen=True, slots=True)
class Acquired:
    """The outcome of ``LockBackend.acquire``.

    Granted: ``lock`` is the caller's lock, keeping its old token when it
    was a renewal of a live lock. ``displaced`` is an expired lock of anyone
    (the caller included) that this call removed to make room: it was not
    claimed by ``claim_expired`` and so still needs its release announced.

    Not granted, nothing changed, and ``refusal`` says why:

    * ``locked`` — ``lock`` is the other owner's live lock;
    * ``unattended`` — ``lock`` is the caller's own lock, not renewed
      (acquired longer than ``renew_within`` ago);
    * ``barred`` — a forced release bars the caller's user from the field
      until ``until``; ``lock`` is None;
    * ``too_many`` — the caller's user holds ``max_per_user`` live locks;
      ``until`` is the earliest of their expiries; ``lock`` is None.
    """

    lock: Lock | None
    granted: bool
    displaced: Lock | None = None
    refusal: Refusal | None = None
    until: float | None = None


class LockBackend(Protocol):
    async def acquire(
        self,
        *,
        case_id: int,
        branch_id: int,
        field: str,
        owner: Owner,
        token: str,
        ttl: float,
        now: float,
        max_per_user: int | None = None,
        renew_within: float | None = None,
    ) -> Acquired:
        """Take, or renew, the lock on ``(case_id, field)`` atomically.

        Free, expired, or held live by the same owner (user_id and
        client_id): the lock now expires at ``now + ttl``; a live renewal
        keeps its token, anything else gets ``token``. Held live by another
        owner: nothing changes and their lock comes back ungranted.

        Limits, checked in this order and only after the holder: with
        ``renew_within``, a live renewal of a lock acquired more than that
        many seconds ago is refused; a new lock is refused while a forced
        release bars the user from the field (``force_release``), and, with
        ``max_per_user``, while the user holds that many live locks on any
        branch (a renewal never counts twice).
        """
        ...

    async def release(
        self,
        *,
        case_id: int,
        field: str,
        user_id: int | None,
        client_id: str | None,
        token: str | None = None,
    ) -> Lock | None:
        """Compare-and-delete: remove the lock if it belongs to the owner (and has ``token``
        when given). ``user_id`` and ``client_id`` both None: remove it whoever holds it.
        Expired locks count as present here. Returns the removed lock, or None."""
        ...

    async def force_release(
        self,
        *,
        case_id: int,
        field: str,
        by_user_id: int,
        bar_until: float | None,
        now: float,
    ) -> Lock | None:
        """Remove the lock whoever holds it (live or expired) and return it, or None.

        With ``bar_until``, unless the lock was ``by_user_id``'s own, its
        user may not acquire that field again before ``bar_until`` (all of
        their tabs; other users may at once). One atomic step.
        """
        ...

    async def touch(
        self, *, case_id: int, field: str, user_id: int, client_id: str, now: float
    ) -> Lock | None:
        """Mark the owner's live lock worked on at ``now`` (``active_at``); None if not theirs."""
        ...

    async def transfer(
        self,
        *,
        case_id: int,
        field: str,
        holder: Owner,
        to: Owner,
        token: str,
        ttl: float,
        now: float,
    ) -> tuple[Lock, Lock] | None:
        """Hand the live lock of ``holder`` to ``to`` with ``token``, in one step.

        Compares the holder (user and client id); returns ``(old, new)``, or
        None when the lock is gone or held by anyone else (nothing changes).
        The new lock counts as taken and worked on at ``now``.
        """
        ...

    async def get(self, *, case_id: int, field: str, now: float) -> Lock | None:
        """The live lock on the field, or None."""
        ...

    async def get_many(self, *, case_id: int, fields: Sequence[str], now: float) -> dict[str, Lock]:
        """The live locks among ``fields`` of one case, in one read."""
        ...

    async def for_branch(self, *, branch_id: int, now: float) -> list[Lock]:
        """Every live lock on the branch's cases."""
        ...

    async def claim_expired(self, *, now: float) -> list[Lock]:
        """Remove and return the locks with ``expires_at <= now``.

        Each expired lock is returned by exactly one call, however many
        processes sweep at once (or by the ``acquire`` that displaced it).
        """
        ...

    async def release_owner(self, *, branch_id: int, user_id: int, client_id: str) -> list[Lock]:
        """Remove and return every lock (live or expired) of the owner on the branch."""
        ...

    async def close(self) -> None: ...


def iso_utc(epoch: float) -> str:
    """``2024-05-01T12:00:00.250Z``: milliseconds, UTC, with ``Z``."""
    moment = dt.datetime.fromtimestamp(epoch, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
