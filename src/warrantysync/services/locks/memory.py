"""In-process locks: one process, no services to install.

Atomicity comes from the event loop: no method awaits between reading and
writing, so each runs as one uninterrupted step. Expiry is a heap of
``(expires_at, token, key)`` with lazy deletion: a renewal or release leaves
the old entry behind, and ``claim_expired`` skips entries that no longer
match the stored lock, so every operation stays O(log n). The per-user cap
counts the user's own few locks (``_by_user``), never the whole table.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Sequence

from .base import Acquired, Lock, Owner

_Key = tuple[int, str]
_BarKey = tuple[int, str, int]  # case, field, barred user


class MemoryLockBackend:
    def __init__(self) -> None:
        self._locks: dict[_Key, Lock] = {}
        self._by_branch: dict[int, set[_Key]] = {}
        self._by_user: dict[int, set[_Key]] = {}
        self._expiry: list[tuple[float, str, _Key]] = []
        self._bars: dict[_BarKey, float] = {}  # -> until

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
        key = (case_id, field)
        current = self._locks.get(key)
        if current is not None and current.is_live(now):
            if current.owner.user_id != owner.user_id or current.owner.client_id != owner.client_id:
                return Acquired(current, granted=False, refusal="locked")
            if renew_within is not None and now - current.acquired_at > renew_within:
                return Acquired(current, granted=False, refusal="unattended")
            # A renewal keeps the token; the name may have changed since.
            lock = dataclasses.replace(current, owner=owner, expires_at=now + ttl)
            self._store(lock)
            return Acquired(lock, granted=True)
        bar = self._bars.get((case_id, field, owner.user_id))
        if bar is not None and bar > now:
            return Acquired(None, granted=False, refusal="barred", until=bar)
        if max_per_user is not None:
            expiries = [
                lock.expires_at
                for held in self._by_user.get(owner.user_id, ())
                if (lock := self._locks[held]).is_live(now)
            ]
            if len(expiries) >= max_per_user:
                return Acquired(
                    None, granted=False, refusal="too_many", until=min(expiries, default=now)
                )
        if current is not None:
            self._remove(current)
        self._store(
            Lock(case_id, branch_id, field, owner, token, now + ttl, acquired_at=now, active_at=now)
        )
        return Acquired(self._locks[key], granted=True, displaced=current)

    def _store(self, lock: Lock) -> None:
        key = (lock.case_id, lock.field)
        self._locks[key] = lock
        self._by_branch.setdefault(lock.branch_id, set()).add(key)
        self._by_user.setdefault(lock.owner.user_id, set()).add(key)
        heapq.heappush(self._expiry, (lock.expires_at, lock.token, key))

    async def release(
        self,
        *,
        case_id: int,
        field: str,
        user_id: int | None,
        client_id: str | None,
        token: str | None = None,
    ) -> Lock | None:
        current = self._locks.get((case_id, field))
        if current is None:
            return None
        forced = user_id is None and client_id is None
        if not forced and (current.owner.user_id, current.owner.client_id) != (user_id, client_id):
            return None
        if token is not None and current.token != token:
            return None
        self._remove(current)
        return current

    async def force_release(
        self,
        *,
        case_id: int,
        field: str,
        by_user_id: int,
        bar_until: float | None,
        now: float,
    ) -> Lock | None:
        current = self._locks.get((case_id, field))
        if current is None:
            return None
        self._remove(current)
        if bar_until is not None and current.owner.user_id != by_user_id:
            # Forced releases are rare: dropping the lapsed bars here keeps the dict small.
            self._bars = {k: until for k, until in self._bars.items() if until > now}
            self._bars[(case_id, field, current.owner.user_id)] = bar_until
        return current

    async def touch(
        self, *, case_id: int, field: str, user_id: int, client_id: str, now: float
    ) -> Lock | None:
        current = self._locks.get((case_id, field))
        if current is None or not current.is_live(now) or not current.owned_by(user_id, client_id):
            return None
        lock = dataclasses.replace(current, active_at=now)
        self._locks[(case_id, field)] = lock  # same expiry and token: the heap entry still matches
        return lock

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
        current = self._locks.get((case_id, field))
        if (
            current is None
            or not current.is_live(now)
            or not current.owned_by(holder.user_id, holder.client_id)
        ):
            return None
        self._remove(current)
        lock = Lock(
            case_id, current.branch_id, field, to, token, now + ttl, acquired_at=now, active_at=now
        )
        self._store(lock)
        return current, lock

    async def get(self, *, case_id: int, field: str, now: float) -> Lock | None:
        lock = self._locks.get((case_id, field))
        return lock if lock is not None and lock.is_live(now) else None

    async def get_many(self, *, case_id: int, fields: Sequence[str], now: float) -> dict[str, Lock]:
        found: dict[str, Lock] = {}
        for field in fields:
            lock = self._locks.get((case_id, field))
            if lock is not None and lock.is_live(now):
                found[field] = lock
        return found

    async def for_branch(self, *, branch_id: int, now: float) -> list[Lock]:
        keys = self._by_branch.get(branch_id, ())
        return [lock for key in keys if (lock := self._locks[key]).is_live(now)]

    async def claim_expired(self, *, now: float) -> list[Lock]:
        claimed: list[Lock] = []
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, token, key = heapq.heappop(self._expiry)
            lock = self._locks.get(key)
            if lock is not None and lock.token == token and lock.expires_at == expires_at:
                self._remove(lock)
                claimed.append(lock)
        return claimed

    async def release_owner(self, *, branch_id: int, user_id: int, client_id: str) -> list[Lock]:
        owned = [
            lock
            for key in self._by_branch.get(branch_id, ())
            if (lock := self._locks[key]).owner.user_id == user_id
            and lock.owner.client_id == client_id
        ]
        for lock in owned:
            self._remove(lock)
        return owned

    async def close(self) -> None:
        self._locks.clear()
        self._by_branch.clear()
        self._by_user.clear()
        self._expiry.clear()
        self._bars.clear()

    def _remove(self, lock: Lock) -> None:
        key = (lock.case_id, lock.field)
        del self._locks[key]
        for index, group in (
            (self._by_branch, lock.branch_id),
            (self._by_user, lock.owner.user_id),
        ):
            keys = index[group]
            keys.discard(key)
            if not keys:
                del index[group]
