"""The LockBackend contract, one body per backend in ``coordination.LOCK_BACKENDS``.

Times here are small numbers: a backend never reads a clock, it is told ``now``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from coordination import LOCK_BACKENDS, lock_backend_for
from warrantysync.services.locks import (
    Acquired,
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


async def test_backend_cap_counts_the_users_live_locks(lock_backend: LockBackend) -> None:
    async def take(field: str, owner: Owner, now: float) -> Acquired:
        return await lock_backend.acquire(
            case_id=1, branch_id=1, field=field, owner=owner, token=field, ttl=10, now=now,
            max_per_user=2,
        )  # fmt: skip

    assert (await take("notes", ALICE, 0)).granted
    assert (await take("issue", Owner(1, "Alice", "tab-b"), 3)).granted
    assert (await take("status", BOB, 3)).granted  # Bob's do not count for Alice
    refused = await take("product", ALICE, 4)
    assert (refused.granted, refused.refusal, refused.lock) == (False, "too_many", None)
    assert refused.until == 10  # the earliest expiry among hers
    assert await lock_backend.get(case_id=1, field="product", now=4) is None
    assert (await take("notes", ALICE, 5)).granted  # a renewal is not another lock
    assert (await take("product", ALICE, 13)).granted  # "issue" expired at 13: a slot is free
    # Without a cap, nothing is counted.
    unlimited = await lock_backend.acquire(
        case_id=2, branch_id=2, field="notes", owner=ALICE, token="u", ttl=10, now=13
    )
    assert unlimited.granted


async def test_backend_renew_within_refuses_old_renewals_only(lock_backend: LockBackend) -> None:
    async def take(now: float, within: float | None, owner: Owner = ALICE) -> Acquired:
        return await lock_backend.acquire(
            case_id=1, branch_id=1, field="notes", owner=owner, token=f"t{now}", ttl=10,
            now=now, renew_within=within,
        )  # fmt: skip

    first = await take(0, 2)  # a new lock: never refused
    assert first.granted and first.lock is not None and first.lock.acquired_at == 0
    assert (await take(2, 2)).granted  # acquired 2 s ago: still within
    refused = await take(3, 2)
    assert (refused.granted, refused.refusal) == (False, "unattended")
    assert refused.lock is not None and refused.lock.expires_at == 12  # not extended
    renewed = await take(4, None)
    assert renewed.granted and renewed.lock is not None
    assert (renewed.lock.token, renewed.lock.acquired_at, renewed.lock.expires_at) == ("t0", 0, 14)
    # Another owner is told "locked" first.
    assert (await take(5, 2, BOB)).refusal == "locked"


async def test_backend_force_release_bars_the_holders_user(lock_backend: LockBackend) -> None:
    async def take(field: str, owner: Owner, now: float) -> Acquired:
        return await lock_backend.acquire(
            case_id=1, branch_id=1, field=field, owner=owner, token=f"{field}{now}", ttl=10,
            now=now,
        )  # fmt: skip

    await take("notes", ALICE, 0)
    removed = await lock_backend.force_release(
        case_id=1, field="notes", by_user_id=9, bar_until=60, now=1
    )
    assert removed is not None and removed.owner == ALICE
    barred = await take("notes", Owner(1, "Alice", "tab-b"), 2)
    assert (barred.granted, barred.refusal, barred.until, barred.lock) == (
        False,
        "barred",
        60,
        None,
    )
    assert (await take("issue", ALICE, 2)).granted
    assert (await take("notes", BOB, 2)).granted
    assert await lock_backend.force_release(
        case_id=1, field="notes", by_user_id=9, bar_until=None, now=3
    )
    assert (await take("notes", ALICE, 60)).granted  # the bar has ended
    # Nothing to release: nothing barred. One's own lock: not barred either.
    assert (
        await lock_backend.force_release(
            case_id=1, field="status", by_user_id=9, bar_until=99, now=61
        )
        is None
    )
    assert (await take("status", ALICE, 62)).granted
    await lock_backend.force_release(case_id=1, field="status", by_user_id=1, bar_until=99, now=62)
    assert (await take("status", ALICE, 63)).granted


async def test_backend_touch_marks_only_the_owners_live_lock(lock_backend: LockBackend) -> None:
    await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    assert (
        await lock_backend.touch(case_id=1, field="notes", user_id=2, client_id="tab-c", now=3)
        is None
    )
    touched = await lock_backend.touch(
        case_id=1, field="notes", user_id=1, client_id="tab-a", now=3
    )
    assert touched is not None and touched.active_at == 3 and touched.token == "t1"
    assert touched.expires_at == 10  # touching is not renewing
    held = await lock_backend.get(case_id=1, field="notes", now=4)
    assert held is not None and held.active_at == 3
    # A renewal keeps when it was last worked on.
    renewed = await lock_backend.acquire(
        case_id=1, branch_id=1, field="notes", owner=ALICE, token="t9", ttl=10, now=5
    )
    assert renewed.lock is not None and renewed.lock.active_at == 3
    assert (
        await lock_backend.touch(case_id=1, field="notes", user_id=1, client_id="tab-a", now=16)
        is None
    )


async def test_backend_transfer_compares_the_holder_and_hands_over_in_one_step(
    lock_backend: LockBackend,
) -> None:
    await lock_backend.acquire(
        case_id=1, branch_id=4, field="notes", owner=ALICE, token="t1", ttl=10, now=0
    )
    # Not the holder: nothing changes.
    assert (
        await lock_backend.transfer(
            case_id=1, field="notes", holder=BOB, to=BOB, token="t2", ttl=10, now=1
        )
        is None
    )
    moved = await lock_backend.transfer(
        case_id=1, field="notes", holder=ALICE, to=BOB, token="t2", ttl=10, now=2
    )
    assert moved is not None
    old, new = moved
    assert old.owner == ALICE and old.token == "t1"
    assert new.owner == BOB and new.token == "t2" and new.branch_id == 4
    assert new.expires_at == 12 and new.acquired_at == 2 and new.active_at == 2
    assert await lock_backend.get(case_id=1, field="notes", now=3) == new
    assert [lock.owner for lock in await lock_backend.for_branch(branch_id=4, now=3)] == [BOB]
    # Twice: the first one won.
    assert (
        await lock_backend.transfer(
            case_id=1, field="notes", holder=ALICE, to=BOB, token="t3", ttl=10, now=3
        )
        is None
    )
    # Bob's lock counts as his for the cap and expires as his.
    capped = await lock_backend.acquire(
        case_id=2, branch_id=4, field="notes", owner=BOB, token="t4", ttl=10, now=3, max_per_user=1
    )
    assert capped.refusal == "too_many"
    assert [lock.owner for lock in await lock_backend.claim_expired(now=13)] == [BOB]
