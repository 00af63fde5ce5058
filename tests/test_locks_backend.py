"""The LockBackend contract, one body per backend in ``coordination.LOCK_BACKENDS``.

Times here are small numbers: a backend never reads a clock, it is told ``now``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coordination import LOCK_BACKENDS, lock_backend_for
from warrantysync.services.locks import (
    LockBackend,
    MemoryLockBackend,
    Owner,
    make_lock_backend,
)

ALICE = Owner(1, "Alice", "tab-a")
BOB = Owner(2, "Bob", "tab-c")


@pytest.fixture(params=LOCK_BACKENDS)
async def lock_backend(request: pytest.FixtureRequest) -> AsyncIterator[LockBackend]:
    backend = lock_backend_for(request.param, request)
    yield backend
    await backend.close()


def test_make_lock_backend_by_scheme() -> None:
    assert isinstance(make_lock_backend(None), MemoryLockBackend)
    assert isinstance(make_lock_backend("memory://"), MemoryLockBackend)
    with pytest.raises(ValueError, match="'zookeeper'"):
        make_lock_backend("zookeeper://localhost")


async def test_backend_release_is_compare_and_delete(lock_backend: LockBackend) -> None:
    acquired = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    assert acquired.granted and acquired.lock.token == "t1" and acquired.displaced is None
    assert (
        await lock_backend.release(case_id=1, field="notes", user_id=2, client_id="tab-a") is None
    )
    assert (
        await lock_backend.release(
            case_id=1, field="notes", user_id=1, client_id="tab-a", token="t2"
        )
        is None
    )
    removed = await lock_backend.release(
        case_id=1, field="notes", user_id=1, client_id="tab-a", token="t1"
    )
    assert removed == acquired.lock
    assert await lock_backend.get(case_id=1, field="notes", now=0) is None


async def test_backend_get_many_and_for_branch(lock_backend: LockBackend) -> None:
    for field, now in (("notes", 0.0), ("issue", 5.0)):
        await lock_backend.acquire(
            case_id=1, branch_id=3, field=field, owner=ALICE, token=field, ttl=10, now=now
        )
    found = await lock_backend.get_many(case_id=1, fields=["notes", "issue", "status"], now=12)
    assert list(found) == ["issue"]
    assert [x.field for x in await lock_backend.for_branch(branch_id=3, now=12)] == ["issue"]
    assert await lock_backend.for_branch(branch_id=4, now=0) == []
    claimed = await lock_backend.claim_expired(now=12)
    assert [x.token for x in claimed] == ["notes"]


async def test_backend_acquire_grants_renews_refuses(lock_backend: LockBackend) -> None:
    first = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    renewed = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t2", ttl=10, now=4
    )
    assert renewed.granted and renewed.lock.token == "t1" and renewed.lock.expires_at == 14
    refused = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=BOB, token="t3", ttl=10, now=5
    )
    assert not refused.granted
    assert refused.lock == renewed.lock
    assert first.lock.owner == refused.lock.owner
    other_tab = Owner(1, "Alice", "tab-b")
    refused = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=other_tab, token="t4", ttl=10, now=5
    )
    assert not refused.granted


async def test_backend_expiry_boundary_and_displacement(lock_backend: LockBackend) -> None:
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    assert await lock_backend.get(case_id=1, field="notes", now=9.999) is not None
    assert await lock_backend.get(case_id=1, field="notes", now=10) is None  # expires_at <= now
    taken = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=BOB, token="t2", ttl=10, now=10
    )
    assert taken.granted and taken.lock.token == "t2"
    assert taken.displaced is not None and taken.displaced.token == "t1"
    # The displaced lock is gone for good: no sweep hands it out again.
    assert await lock_backend.claim_expired(now=15) == []
    assert [x.token for x in await lock_backend.claim_expired(now=20)] == ["t2"]


async def test_backend_own_expired_lock_gets_the_new_token(lock_backend: LockBackend) -> None:
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    again = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t2", ttl=10, now=11
    )
    assert again.granted and again.lock.token == "t2"
    assert again.displaced is not None and again.displaced.token == "t1"


async def test_backend_claim_expired_once_and_not_renewed(lock_backend: LockBackend) -> None:
    for field in ("notes", "issue"):
        await lock_backend.acquire(
            case_id=1, branch_id=1, field=field, owner=ALICE, token=field, ttl=10, now=0
        )
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="issue", owner=ALICE, token="x", ttl=10, now=5
    )
    assert [x.field for x in await lock_backend.claim_expired(now=10)] == ["notes"]
    assert await lock_backend.claim_expired(now=10) == []
    assert [x.field for x in await lock_backend.claim_expired(now=15)] == ["issue"]
    assert await lock_backend.for_branch(branch_id=1, now=0) == []


async def test_backend_forced_release_and_expired_release(lock_backend: LockBackend) -> None:
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    forced = await lock_backend.release(case_id=1, field="notes", user_id=None, client_id=None)
    assert forced is not None and forced.token == "t1"
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t2", ttl=10, now=0
    )
    # An expired lock not yet swept can still be released by its owner (once).
    mine = await lock_backend.release(case_id=1, field="notes", user_id=1, client_id="tab-a")
    assert mine is not None and mine.token == "t2"
    assert await lock_backend.claim_expired(now=100) == []


async def test_backend_release_owner_is_per_branch(lock_backend: LockBackend) -> None:
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="a", ttl=10, now=0
    )
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="issue", owner=BOB, token="b", ttl=10, now=0
    )
    await lock_backend.acquire(
        case_id=2, branch_id=2, field="notes", owner=ALICE, token="c", ttl=10, now=0
    )
    removed = await lock_backend.release_owner(branch_id=1, user_id=1, client_id="tab-a")
    assert [x.token for x in removed] == ["a"]
    assert await lock_backend.release_owner(branch_id=1, user_id=1, client_id="tab-a") == []
    assert {x.token for x in await lock_backend.for_branch(branch_id=1, now=0)} == {"b"}
    assert {x.token for x in await lock_backend.for_branch(branch_id=2, now=0)} == {"c"}
