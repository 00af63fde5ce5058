"""Coordination backends for contract tests, and the fakes they share.

Every lock and presence test body runs once per name in ``LOCK_BACKENDS`` /
``PRESENCE_BACKENDS``. A Redis backend joins by adding ``"redis"`` to the
list and a branch to the factory (``request.getfixturevalue("redis_server")``
gives it the private server from conftest).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from warrantysync.services.locks import LockBackend, MemoryLockBackend
from warrantysync.services.presence import MemoryPresenceBackend, PresenceBackend

# Redis params carry the `redis` marker, so `pytest -m "not redis"` runs memory only.
LOCK_BACKENDS: list[Any] = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
PRESENCE_BACKENDS: list[Any] = ["memory", pytest.param("redis", marks=pytest.mark.redis)]


def redis_url_and_prefix(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The session's private Redis and a key prefix of the test's own (no FLUSHDB races)."""
    server = request.getfixturevalue("redis_server")
    return server.url, f"test-{secrets.token_hex(6)}"


def lock_backend_for(name: str, request: pytest.FixtureRequest) -> LockBackend:
    if name == "memory":
        return MemoryLockBackend()
    if name == "redis":
        from warrantysync.services.locks.redis import RedisLockBackend

        url, prefix = redis_url_and_prefix(request)
        return RedisLockBackend(url, prefix=prefix)
    raise AssertionError(f"unknown lock backend {name}")


def presence_backend_for(name: str, request: pytest.FixtureRequest) -> PresenceBackend:
    if name == "memory":
        return MemoryPresenceBackend()
    if name == "redis":
        from warrantysync.services.presence.redis import RedisPresenceBackend

        url, prefix = redis_url_and_prefix(request)
        return RedisPresenceBackend(url, prefix=prefix)
    raise AssertionError(f"unknown presence backend {name}")


class Clock:
    """A clock that moves only when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Recorder:
    """A ``publish`` callable that keeps what it was given.

    ``events`` holds what everyone sees; ``owned`` the owner's copies, as
    ``(branch_id, kind, owner user id, payload)``.
    """

    def __init__(self) -> None:
        self.events: list[tuple[int, str, dict[str, Any]]] = []
        self.owned: list[tuple[int, str, int, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    async def __call__(
        self,
        branch_id: int,
        kind: str,
        payload: dict[str, Any],
        *,
        owner: tuple[int, dict[str, Any]] | None = None,
    ) -> None:
        self.events.append((branch_id, kind, payload))
        if owner is not None:
            self.owned.append((branch_id, kind, *owner))
        self._changed.set()

    def kinds(self) -> list[str]:
        return [kind for _, kind, _ in self.events]

    def reasons(self) -> list[str]:
        return [p["reason"] for _, kind, p in self.events if kind == "lock-released"]

    async def wait_for_reasons(self, *reasons: str) -> None:
        while self.reasons() != list(reasons):
            self._changed.clear()
            await self._changed.wait()
