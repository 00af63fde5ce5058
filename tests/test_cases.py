"""services/cases.py: how ``CaseService.patch`` decides a change the field locks may forbid.

The service holds the ``LockManager`` and gets the change's lock tokens and
client id, so the whole PATCH order after the body's shape is decided here
(docs/protocol.md, PATCH): the fields' rules, 423 ``locked``, 409
``lock_lost``, 409 ``conflict``, commit. Each test runs over every lock
backend; "Redis unreachable" is a real Redis lock backend pointed at a port
nobody listens on.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from coordination import LOCK_BACKENDS, Recorder, lock_backend_for
from factories import World, seed_world
from servers import free_port
from warrantysync.errors import LockConflict, LockLost, StaleVersion, Unavailable, ValidationFailed
from warrantysync.services.cases import Actor, CaseService
from warrantysync.services.locks import LockManager, Owner
from warrantysync.services.locks.redis import RedisLockBackend
from warrantysync.storage.db import Database

TTL = 30.0


async def _ignore(_event: object) -> None:
    return None


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def world(db: Database) -> World:
    return await seed_world(db)


@pytest.fixture(params=LOCK_BACKENDS)
async def locks(request: pytest.FixtureRequest) -> AsyncIterator[LockManager]:
    manager = LockManager(lock_backend_for(request.param, request), ttl=TTL, publish=Recorder())
    yield manager
    await manager.close()


@pytest.fixture
async def unreachable() -> AsyncIterator[LockManager]:
    backend = RedisLockBackend(f"redis://127.0.0.1:{free_port()}/0", prefix="nobody-home")
    manager = LockManager(backend, ttl=TTL, publish=Recorder())
    yield manager
    await manager.close()


class Editor:
    """One user in one tab, editing the world's phone case through a ``CaseService``."""

    def __init__(self, cases: CaseService, world: World, user: str, client_id: str | None):
        self.cases, self.world = cases, world
        self.user_id = world.users[user]
        self.actor = Actor(self.user_id, user.title(), client_id)
        self.case_id = world.cases["phone"]

    async def lock(self, locks: LockManager, field: str) -> str:
        assert self.actor.client_id is not None
        lock = await locks.acquire(
            case_id=self.case_id,
            branch_id=self.world.branches["downtown"],
            field=field,
            owner=Owner(self.user_id, self.actor.name, self.actor.client_id),
        )
        return lock.token

    async def patch(
        self,
        changes: dict[str, Any],
        expected: dict[str, Any] | None = None,
        tokens: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return await self.cases.patch(
            case_id=self.case_id,
            changes=changes,
            expected=expected or {},
            lock_tokens=tokens or {},
            actor=self.actor,
        )

    async def version(self) -> int:
        return int((await self.cases.get(case_id=self.case_id))["version"])


def service(db: Database, locks: LockManager | None) -> CaseService:
    return CaseService(db, publish=_ignore, replay_window=10000, locks=locks)


async def test_a_field_locked_by_someone_else_is_refused_and_nothing_is_written(
    db: Database, world: World, locks: LockManager
) -> None:
    cases = service(db, locks)
    bob = Editor(cases, world, "bob", "bob-tab")
    await bob.lock(locks, "notes")
    for who in (
        Editor(cases, world, "alice", "alice-tab"),  # another user
        Editor(cases, world, "bob", "other-tab"),  # the same user in another tab
        Editor(cases, world, "bob", None),  # a request that names no tab owns nothing
    ):
        with pytest.raises(LockConflict) as refused:
            await who.patch({"notes": "x", "status": "ready"})
        assert refused.value.extra["lock"]["user"]["id"] == bob.user_id
    assert await bob.version() == 1


async def test_the_holder_saves_with_or_without_its_token(
    db: Database, world: World, locks: LockManager
) -> None:
    alice = Editor(service(db, locks), world, "alice", "alice-tab")
    token = await alice.lock(locks, "notes")
    assert (await alice.patch({"notes": "a"}, tokens={"notes": token}))["version"] == 2
    assert (await alice.patch({"notes": "b"}))["version"] == 3


async def test_a_token_of_a_lock_that_is_gone_is_lock_lost(
    db: Database, world: World, locks: LockManager
) -> None:
    cases = service(db, locks)
    alice = Editor(cases, world, "alice", "alice-tab")
    old = await alice.lock(locks, "notes")
    await locks.release(
        case_id=alice.case_id,
        branch_id=world.branches["downtown"],
        field="notes",
        user_id=alice.user_id,
        client_id="alice-tab",
    )
    with pytest.raises(LockLost) as lost:
        await alice.patch({"notes": "late"}, tokens={"notes": old})
    assert lost.value.extra == {"field": "notes"}
    # Taken again: a new token, and the old one still does not pass.
    await alice.lock(locks, "notes")
    with pytest.raises(LockLost):
        await alice.patch({"notes": "late"}, tokens={"notes": old})
    assert await alice.version() == 1


async def test_the_order_is_rules_then_locked_then_lock_lost_then_conflict(
    db: Database, world: World, locks: LockManager
) -> None:
    cases = service(db, locks)
    alice, bob = Editor(cases, world, "alice", "alice-tab"), Editor(cases, world, "bob", "bob-tab")
    await bob.lock(locks, "status")
    stale = {"notes": "not what it is", "status": "new"}
    lost = {"notes": "never-issued"}
    # A broken rule first, even in the locked field.
    with pytest.raises(ValidationFailed):
        await alice.patch({"notes": "x", "status": "bogus"}, stale, lost)
    # `expected` naming a field outside `changes` is a 422 too, before any lock.
    with pytest.raises(ValidationFailed):
        await alice.patch({"status": "ready"}, {"product": "x"})
    # Then someone else's lock, before a lost token of one's own.
    with pytest.raises(LockConflict):
        await alice.patch({"notes": "x", "status": "ready"}, stale, lost)
    # Then the lost token, before a stale `expected`.
    with pytest.raises(LockLost):
        await alice.patch({"notes": "x"}, {"notes": "not what it is"}, lost)
    with pytest.raises(StaleVersion):
        await alice.patch({"notes": "x"}, {"notes": "not what it is"})
    assert await alice.version() == 1


async def test_without_a_lock_manager_no_lock_is_checked(db: Database, world: World) -> None:
    alice = Editor(service(db, None), world, "alice", None)
    assert (await alice.patch({"notes": "seeded"}, tokens={"notes": "any"}))["version"] == 2


async def test_while_locks_cannot_be_checked_only_a_change_fenced_by_expected_saves(
    db: Database, world: World, unreachable: LockManager
) -> None:
    alice = Editor(service(db, unreachable), world, "alice", "alice-tab")
    for expected in ({}, {"notes": ""}):  # none, or not for every changed field
        with pytest.raises(Unavailable) as refused:
            await alice.patch({"notes": "x", "status": "ready"}, expected)
        assert refused.value.retry_after == 2
        assert refused.value.message == (
            "locks cannot be checked right now; retry, or send expected values"
        )
    assert await alice.version() == 1
    fenced = {"notes": "", "status": "new"}
    saved = await alice.patch({"notes": "x", "status": "ready"}, fenced)
    assert (saved["version"], saved["notes"], saved["status"]) == (2, "x", "ready")
    # Still fenced by the database: a stale `expected` is a conflict, not a save.
    with pytest.raises(StaleVersion):
        await alice.patch({"notes": "y"}, {"notes": ""})
    # The fields' rules still come first.
    with pytest.raises(ValidationFailed):
        await alice.patch({"status": "bogus"})
    assert await alice.version() == 2
