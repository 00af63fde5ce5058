"""Field locks: the LockManager policy over every lock backend.

Each test body runs once per backend in ``coordination.LOCK_BACKENDS``; the
raw backend contract is in ``test_locks_backend.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from coordination import LOCK_BACKENDS, Clock, Recorder, lock_backend_for
from warrantysync.errors import (
    Forbidden,
    LockBarred,
    LockConflict,
    LockLost,
    StreamRequired,
    TooManyLocks,
    Unavailable,
)
from warrantysync.services.locks import (
    Lock,
    LockBackend,
    LockManager,
    MemoryLockBackend,
    Owner,
    locks_seen_by,
)
from warrantysync.services.metrics import Metrics

TTL = 30.0
ALICE = Owner(1, "Alice", "tab-a")
ALICE_2 = Owner(1, "Alice", "tab-b")
BOB = Owner(2, "Bob", "tab-c")


@pytest.fixture(params=LOCK_BACKENDS)
async def lock_backend(request: pytest.FixtureRequest) -> AsyncIterator[LockBackend]:
    backend = lock_backend_for(request.param, request)
    yield backend
    await backend.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def published() -> Recorder:
    return Recorder()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def locks(
    lock_backend: LockBackend, clock: Clock, published: Recorder, metrics: Metrics
) -> LockManager:
    return LockManager(lock_backend, ttl=TTL, publish=published, clock=clock, metrics=metrics)


async def take(locks: LockManager, owner: Owner, field: str = "notes", case_id: int = 7) -> Lock:
    return await locks.acquire(case_id=case_id, branch_id=1, field=field, owner=owner)


def gauge(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None
    return value


# --- acquire ---


async def test_acquire_publishes_public_lock(
    locks: LockManager, published: Recorder, clock: Clock, metrics: Metrics
) -> None:
    lock = await take(locks, ALICE)
    assert len(lock.token) >= 32
    assert lock.expires_at == clock.now + TTL
    # Everyone sees the lock without its client id; Alice's own streams get hers.
    assert published.events == [(1, "lock-acquired", {"lock": lock.seen_by(None)})]
    assert published.owned == [(1, "lock-acquired", 1, {"lock": lock.public()})]
    public = lock.public()
    assert set(public) == {"case_id", "field", "user", "client_id", "expires_at", "active_at"}
    assert public["user"] == {"id": 1, "name": "Alice"}
    assert public["client_id"] == "tab-a"
    assert lock.seen_by(2) == {**public, "client_id": None}
    assert lock.seen_by(1) == public
    assert public["expires_at"].endswith("Z")
    assert lock.token not in str(published.events) + str(published.owned)
    assert gauge(metrics, "warrantysync_locks_held") == 1


def test_public_expires_at_is_iso_utc() -> None:
    lock = Lock(1, 1, "notes", ALICE, "t", 1_700_000_000.25)
    assert lock.public()["expires_at"] == "2023-11-14T22:13:20.250Z"


async def test_renewal_keeps_token_and_announces_the_new_expiry(
    locks: LockManager, published: Recorder, clock: Clock, metrics: Metrics
) -> None:
    first = await take(locks, ALICE)
    clock.advance(10)
    renewed = await take(locks, ALICE)
    assert renewed.token == first.token
    assert renewed.expires_at == clock.now + TTL
    assert published.kinds() == ["lock-acquired", "lock-renewed"]
    assert published.events[-1][2] == {"lock": renewed.seen_by(None)}
    assert gauge(metrics, "warrantysync_locks_held") == 1


async def test_tokens_differ_per_acquisition(locks: LockManager) -> None:
    first = await take(locks, ALICE)
    await locks.release(case_id=7, branch_id=1, field="notes", user_id=1, client_id="tab-a")
    second = await take(locks, ALICE)
    other_field = await take(locks, ALICE, field="issue")
    assert len({first.token, second.token, other_field.token}) == 3


@pytest.mark.parametrize("other", [BOB, ALICE_2], ids=["other-user", "same-user-other-tab"])
async def test_conflict_names_the_holder(
    locks: LockManager, published: Recorder, metrics: Metrics, other: Owner
) -> None:
    mine = await take(locks, ALICE)
    with pytest.raises(LockConflict) as refused:
        await take(locks, other)
    assert refused.value.message == "notes is locked by Alice"
    # Another user is not told which of Alice's tabs holds it; Alice is.
    assert refused.value.extra["lock"] == mine.seen_by(other.user_id)
    assert (refused.value.extra["lock"]["client_id"] is None) == (other.user_id != 1)
    assert published.kinds() == ["lock-acquired"]
    assert gauge(metrics, "warrantysync_lock_conflicts_total") == 1


async def test_expired_lock_is_displaced_and_announced_once(
    locks: LockManager, published: Recorder, clock: Clock, metrics: Metrics
) -> None:
    first = await take(locks, ALICE)
    clock.advance(TTL)
    bobs = await take(locks, BOB)
    assert bobs.token != first.token
    assert published.kinds() == ["lock-acquired", "lock-released", "lock-acquired"]
    assert published.reasons() == ["expired"]
    assert await locks.sweep() == 0
    assert gauge(metrics, "warrantysync_locks_held") == 1


async def test_own_expired_lock_gets_a_new_token(locks: LockManager, clock: Clock) -> None:
    first = await take(locks, ALICE)
    clock.advance(TTL + 1)
    again = await take(locks, ALICE)
    assert again.token != first.token


# --- release ---


async def test_owner_releases(locks: LockManager, published: Recorder, metrics: Metrics) -> None:
    await take(locks, ALICE)
    await locks.release(case_id=7, branch_id=1, field="notes", user_id=1, client_id="tab-a")
    released = {
        "case_id": 7,
        "field": "notes",
        "user": {"id": 1, "name": "Alice"},
        "client_id": None,
        "reason": "released",
    }
    assert published.events[-1] == (1, "lock-released", released)
    assert published.owned[-1] == (1, "lock-released", 1, {**released, "client_id": "tab-a"})
    assert await locks.snapshot(branch_id=1) == []
    assert gauge(metrics, "warrantysync_locks_held") == 0


@pytest.mark.parametrize("client_id", ["tab-c", "tab-b", None])
async def test_non_owner_release_is_forbidden(
    locks: LockManager, published: Recorder, client_id: str | None
) -> None:
    await take(locks, ALICE)
    user_id = 2 if client_id == "tab-c" else 1
    with pytest.raises(Forbidden, match="you do not hold this lock"):
        await locks.release(
            case_id=7, branch_id=1, field="notes", user_id=user_id, client_id=client_id
        )
    assert len(await locks.snapshot(branch_id=1)) == 1
    assert published.kinds() == ["lock-acquired"]


async def test_forced_release(locks: LockManager, published: Recorder) -> None:
    await take(locks, ALICE)
    await locks.release(
        case_id=7, branch_id=1, field="notes", user_id=9, client_id="mgr", force=True, name="Mo"
    )
    assert published.reasons() == ["forced"]
    # The holder's tab learns who took the lock away.
    [(_, _, payload)] = [e for e in published.events if e[1] == "lock-released"]
    assert payload["by"] == {"id": 9, "name": "Mo"}
    assert payload["user"]["id"] == ALICE.user_id
    assert await locks.snapshot(branch_id=1) == []


async def test_force_on_own_lock_reads_released(locks: LockManager, published: Recorder) -> None:
    await take(locks, ALICE)
    await locks.release(
        case_id=7, branch_id=1, field="notes", user_id=1, client_id="tab-a", force=True
    )
    assert published.reasons() == ["released"]
    assert all("by" not in payload for _, _, payload in published.events)


async def test_release_of_free_field_is_a_no_op(locks: LockManager, published: Recorder) -> None:
    await locks.release(case_id=7, branch_id=1, field="notes", user_id=1, client_id="tab-a")
    await locks.release(case_id=7, branch_id=1, field="notes", user_id=1, client_id="x", force=True)
    assert published.events == []


# --- check_write ---


async def test_check_write_passes_own_and_unlocked_fields(locks: LockManager) -> None:
    mine = await take(locks, ALICE)
    await locks.check_write(
        case_id=7,
        fields=["notes", "issue"],
        user_id=1,
        client_id="tab-a",
        tokens={"notes": mine.token},
    )
    # A token is optional for one's own lock.
    await locks.check_write(case_id=7, fields=["notes"], user_id=1, client_id="tab-a", tokens={})


@pytest.mark.parametrize(("user_id", "client_id"), [(2, "tab-c"), (1, "tab-b"), (1, None)], ids=str)
async def test_check_write_refuses_foreign_lock(
    locks: LockManager, user_id: int, client_id: str | None
) -> None:
    mine = await take(locks, ALICE)
    with pytest.raises(LockConflict) as refused:
        await locks.check_write(
            case_id=7, fields=["notes"], user_id=user_id, client_id=client_id, tokens={}
        )
    assert refused.value.extra["lock"] == mine.seen_by(user_id)


async def test_check_write_conflict_comes_before_lost(locks: LockManager) -> None:
    await take(locks, BOB, field="status")
    with pytest.raises(LockConflict):
        await locks.check_write(
            case_id=7,
            fields=["notes", "status"],
            user_id=1,
            client_id="tab-a",
            tokens={"notes": "not-a-token"},
        )


async def test_lock_lost_after_expiry(locks: LockManager, clock: Clock) -> None:
    mine = await take(locks, ALICE)
    clock.advance(TTL)
    with pytest.raises(LockLost) as lost:
        await locks.check_write(
            case_id=7, fields=["notes"], user_id=1, client_id="tab-a", tokens={"notes": mine.token}
        )
    assert lost.value.message == "notes: your lock is gone"
    assert lost.value.extra == {"field": "notes"}
    await locks.sweep()
    with pytest.raises(LockLost):
        await locks.check_write(
            case_id=7, fields=["notes"], user_id=1, client_id="tab-a", tokens={"notes": mine.token}
        )


async def test_lock_lost_after_takeover(locks: LockManager, clock: Clock) -> None:
    mine = await take(locks, ALICE)
    clock.advance(TTL)
    await take(locks, BOB)

    async def write() -> None:
        await locks.check_write(
            case_id=7, fields=["notes"], user_id=1, client_id="tab-a", tokens={"notes": mine.token}
        )

    # While Bob holds it the field is simply locked (423 before 409)...
    with pytest.raises(LockConflict):
        await write()
    await locks.release(case_id=7, branch_id=1, field="notes", user_id=2, client_id="tab-c")
    # ...and once he let go, Alice's old token is still no good.
    with pytest.raises(LockLost):
        await write()
    # Nor after she takes the lock again: that is a new token.
    await take(locks, ALICE)
    with pytest.raises(LockLost):
        await write()


# --- expiry, disconnects, snapshots ---


async def test_sweep_publishes_expiry_exactly_once(
    lock_backend: LockBackend, locks: LockManager, published: Recorder, clock: Clock
) -> None:
    await take(locks, ALICE)
    await take(locks, BOB, field="issue")
    clock.advance(TTL - 1)
    assert await locks.sweep() == 0
    clock.advance(1)
    # A second process sweeping the same backend finds nothing left to claim.
    other = Recorder()
    peer = LockManager(lock_backend, ttl=TTL, publish=other, clock=clock)
    assert await locks.sweep() == 2
    assert await peer.sweep() == 0
    assert await locks.sweep() == 0
    assert published.reasons() == ["expired", "expired"]
    assert other.events == []


async def test_renewal_postpones_expiry(locks: LockManager, clock: Clock) -> None:
    await take(locks, ALICE)
    clock.advance(TTL - 1)
    await take(locks, ALICE)
    clock.advance(2)
    assert await locks.sweep() == 0
    assert len(await locks.snapshot(branch_id=1)) == 1


async def test_release_client(locks: LockManager, published: Recorder) -> None:
    await take(locks, ALICE, field="notes")
    await take(locks, ALICE, field="issue")
    await take(locks, ALICE_2, field="status")
    await locks.acquire(case_id=9, branch_id=2, field="notes", owner=ALICE)
    released = await locks.release_client(branch_id=1, user_id=1, client_id="tab-a")
    assert released == 2
    assert published.reasons() == ["disconnected", "disconnected"]
    left = await locks.snapshot(branch_id=1)
    assert [(x["field"], x["client_id"]) for x in left] == [("status", "tab-b")]
    assert [x["client_id"] for x in locks_seen_by(left, 2)] == [None]
    assert locks_seen_by(left, 1) == left
    assert len(await locks.snapshot(branch_id=2)) == 1


async def test_snapshot_hides_tokens_and_expired_locks(locks: LockManager, clock: Clock) -> None:
    await take(locks, ALICE, case_id=8)
    clock.advance(TTL / 2)
    second = await take(locks, BOB, case_id=7)
    first_snapshot = await locks.snapshot(branch_id=1)
    assert [x["case_id"] for x in first_snapshot] == [7, 8]
    assert all("token" not in x for x in first_snapshot)
    clock.advance(TTL / 2)
    assert await locks.snapshot(branch_id=1) == [second.public()]


async def test_publish_failure_is_logged_not_raised(
    lock_backend: LockBackend, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(branch_id: int, kind: str, payload: dict[str, Any]) -> None:
        raise RuntimeError("broker down")

    locks = LockManager(lock_backend, ttl=TTL, publish=broken)
    with caplog.at_level(logging.ERROR):
        await take(locks, ALICE)
    assert "could not publish lock-acquired" in caplog.text


async def test_run_announces_expiry_within_a_second(
    lock_backend: LockBackend, published: Recorder
) -> None:
    locks = LockManager(lock_backend, ttl=0.3, publish=published)
    stop = asyncio.Event()
    runner = asyncio.create_task(locks.run(stop))
    await take(locks, ALICE)
    async with asyncio.timeout(0.3 + 1.0):
        await published.wait_for_reasons("expired")
    stop.set()
    async with asyncio.timeout(1):
        await runner


async def test_run_survives_an_unavailable_backend(
    caplog: pytest.LogCaptureFixture, published: Recorder
) -> None:
    class Flaky(MemoryLockBackend):
        failures = 3

        async def claim_expired(self, *, now: float) -> list[Lock]:
            if self.failures:
                self.failures -= 1
                raise Unavailable("redis is down")
            return await super().claim_expired(now=now)

    backend = Flaky()
    locks = LockManager(backend, ttl=0.2, publish=published)
    stop = asyncio.Event()
    runner = asyncio.create_task(locks.run(stop))
    await take(locks, ALICE)
    async with asyncio.timeout(2):
        await published.wait_for_reasons("expired")
    stop.set()
    await runner
    assert caplog.text.count("backend unavailable") == 1


# --- limits against hoarding ---


def limited(
    backend: LockBackend,
    clock: Clock,
    published: Recorder,
    metrics: Metrics,
    *,
    attending: dict[str, bool] | None = None,
    cooldown: float = 0.0,
) -> LockManager:
    """Cap 3, a 5 s grace for renewals without a stream, ``attending[client_id]``."""

    async def present(branch_id: int, user_id: int, client_id: str) -> bool:
        return (attending or {}).get(client_id, False)

    return LockManager(
        backend,
        ttl=TTL,
        publish=published,
        clock=clock,
        metrics=metrics,
        max_per_user=3,
        attending=present if attending is not None else None,
        renew_grace=5.0,
        force_cooldown=cooldown,
    )


def refusals(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "warrantysync_lock_refusals_total", {"reason": reason}
    )
    return value or 0.0


async def test_the_cap_counts_every_tab_and_branch_of_the_user(
    lock_backend: LockBackend, clock: Clock, published: Recorder, metrics: Metrics
) -> None:
    locks = limited(lock_backend, clock, published, metrics)
    await take(locks, ALICE, field="notes")
    clock.advance(2)
    await take(locks, ALICE_2, field="issue")
    await locks.acquire(case_id=9, branch_id=2, field="notes", owner=ALICE)
    with pytest.raises(TooManyLocks) as refused:
        await take(locks, ALICE_2, field="status")
    assert refused.value.extra == {"limit": 3}
    assert "3 locks" in refused.value.message
    assert refused.value.retry_after == TTL - 2  # when her first lock ends, unless renewed
    assert refusals(metrics, "too_many_locks") == 1
    assert published.kinds() == ["lock-acquired"] * 3
    # A renewal is not a new lock; another user is not counted against her.
    await take(locks, ALICE, field="notes")
    await take(locks, BOB, field="product")
    # Expired locks no longer count, swept or not.
    clock.advance(TTL)
    lock = await take(locks, ALICE_2, field="status")
    assert lock.owner == ALICE_2


async def test_a_renewal_without_a_stream_is_refused_past_the_grace(
    lock_backend: LockBackend, clock: Clock, published: Recorder, metrics: Metrics
) -> None:
    attending = {"tab-a": False}
    locks = limited(lock_backend, clock, published, metrics, attending=attending)
    first = await take(locks, ALICE)
    clock.advance(5)
    renewed = await take(locks, ALICE)  # within the grace: fine
    clock.advance(0.5)
    with pytest.raises(StreamRequired) as refused:
        await take(locks, ALICE)
    assert refused.value.extra["lock"] == renewed.public()
    assert refusals(metrics, "stream_required") == 1
    # Refused means unchanged: the lock still ends when it would have.
    [held] = await locks.snapshot(branch_id=1)
    assert held["expires_at"] == renewed.public()["expires_at"]
    # With a stream open, the same renewal goes through (and keeps the token).
    attending["tab-a"] = True
    again = await take(locks, ALICE)
    assert again.token == first.token and again.expires_at == clock.now + TTL
    # Taking a new lock never needs a stream.
    attending["tab-a"] = False
    await take(locks, ALICE, field="issue")
    # Only the renewals that went through are announced.
    assert published.kinds() == ["lock-acquired", "lock-renewed", "lock-renewed", "lock-acquired"]


async def test_a_forced_release_bars_its_user_from_that_field(
    lock_backend: LockBackend, clock: Clock, published: Recorder, metrics: Metrics
) -> None:
    locks = limited(lock_backend, clock, published, metrics, cooldown=60)
    await take(locks, ALICE)
    await locks.release(
        case_id=7, branch_id=1, field="notes", user_id=9, client_id="mgr", force=True
    )
    assert published.reasons() == ["forced"]
    clock.advance(10)
    for tab in (ALICE, ALICE_2):
        with pytest.raises(LockBarred) as barred:
            await take(locks, tab)
        assert barred.value.retry_after == 50
        assert barred.value.extra["field"] == "notes"
        assert barred.value.extra["until"].endswith("Z")
    assert refusals(metrics, "lock_barred") == 2
    await take(locks, ALICE, field="issue")  # only that field
    await take(locks, BOB)  # and only her
    await locks.release(case_id=7, branch_id=1, field="notes", user_id=2, client_id="tab-c")
    clock.advance(50)
    await take(locks, ALICE)
    # A manager forcing their own lock, or a cooldown of 0, bars nobody.
    await locks.release(
        case_id=7, branch_id=1, field="notes", user_id=1, client_id="other", force=True
    )
    await take(locks, ALICE)
    unbarred = limited(lock_backend, clock, published, metrics, cooldown=0)
    await unbarred.release(
        case_id=7, branch_id=1, field="notes", user_id=9, client_id=None, force=True
    )
    await take(unbarred, ALICE)
