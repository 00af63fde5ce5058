"""Asking for a locked field and row presence: the service policy over each backend.

The wire contract (endpoints, events, refusals through a real server) is in
``test_where_live.py``; here the clock is ours, so timeouts are exact.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from coordination import LOCK_BACKENDS, Clock, Recorder, lock_backend_for, redis_url_and_prefix
from warrantysync.errors import Forbidden, LockGone, NotFound, RequestPending
from warrantysync.services.lockrequests import (
    LockRequest,
    LockRequestBackend,
    LockRequests,
    MemoryLockRequestBackend,
)
from warrantysync.services.locks import Lock, LockManager, Owner
from warrantysync.services.metrics import Metrics
from warrantysync.services.rowpresence import (
    MemoryRowPresenceBackend,
    RowPresence,
    RowPresenceBackend,
    Spot,
    merge,
)

TIMEOUT = 15.0
ALICE = Owner(1, "Alice", "tab-a")
BOB = Owner(2, "Bob", "tab-b")
DAVE = Owner(4, "Dave", "tab-d")


def request_backend_for(name: str, request: pytest.FixtureRequest) -> LockRequestBackend:
    if name == "memory":
        return MemoryLockRequestBackend()
    from warrantysync.services.lockrequests.redis import RedisLockRequestBackend

    url, prefix = redis_url_and_prefix(request)
    return RedisLockRequestBackend(url, prefix=prefix)


def rows_backend_for(name: str, request: pytest.FixtureRequest) -> RowPresenceBackend:
    if name == "memory":
        return MemoryRowPresenceBackend()
    from warrantysync.services.rowpresence.redis import RedisRowPresenceBackend

    url, prefix = redis_url_and_prefix(request)
    return RedisRowPresenceBackend(url, prefix=prefix)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def published() -> Recorder:
    return Recorder()


@pytest.fixture(params=LOCK_BACKENDS)
async def asked(
    request: pytest.FixtureRequest, clock: Clock, published: Recorder
) -> AsyncIterator[LockRequests]:
    locks = LockManager(
        lock_backend_for(request.param, request), ttl=30, publish=published, clock=clock
    )
    away: set[str] = set()

    async def attending(_branch: int, _user: int, client_id: str) -> bool:
        return client_id not in away

    service = LockRequests(
        request_backend_for(request.param, request),
        locks=locks,
        publish=published,
        timeout=TIMEOUT,
        attending=attending,
        clock=clock,
        metrics=Metrics(),
    )
    service.away = away  # type: ignore[attr-defined]
    yield service
    await service.close()
    await locks.close()


async def hold(service: LockRequests, owner: Owner = ALICE) -> Lock:
    return await service.locks.acquire(case_id=7, branch_id=1, field="notes", owner=owner)


async def ask(service: LockRequests, asker: Owner = BOB) -> Lock | LockRequest:
    return await service.ask(case_id=7, branch_id=1, field="notes", asker=asker)


def answers(published: Recorder) -> list[str]:
    return [p["answer"] for _, kind, p in published.events if kind == "lock-request-answered"]


async def test_asking_for_a_free_field_just_takes_it(asked: LockRequests) -> None:
    taken = await ask(asked)
    assert isinstance(taken, Lock) and taken.owner == BOB


async def test_the_holder_is_told_with_their_client_id_others_without(
    asked: LockRequests, published: Recorder
) -> None:
    await hold(asked)
    request = await ask(asked)
    assert isinstance(request, LockRequest) and request.holder == ALICE
    [(_, _, shared)] = [e for e in published.events if e[1] == "lock-requested"]
    [(_, _, owner, own)] = [e for e in published.owned if e[1] == "lock-requested"]
    assert shared["request"]["client_id"] is None
    assert owner == 1 and own["request"]["client_id"] == "tab-a"
    assert shared["request"]["asker"] == {"id": 2, "name": "Bob"}
    # Asking again is the same request; someone else asking is refused.
    assert await ask(asked) == request
    with pytest.raises(RequestPending):
        await ask(asked, DAVE)


async def test_release_hands_the_lock_over_atomically(
    asked: LockRequests, published: Recorder
) -> None:
    first = await hold(asked)
    request = await ask(asked)
    assert isinstance(request, LockRequest)
    with pytest.raises(Forbidden):
        await asked.answer(request_id=request.id, user_id=2, client_id="tab-b", answer="release")
    with pytest.raises(Forbidden):  # Alice, another tab: not the one holding it
        await asked.answer(request_id=request.id, user_id=1, client_id="tab-z", answer="release")
    answer = await asked.answer(
        request_id=request.id, user_id=1, client_id="tab-a", answer="release"
    )
    assert answer["answer"] == "released"
    now = await asked.locks.get(case_id=7, field="notes")
    assert now is not None and now.owner == BOB and now.token != first.token
    released = [p for _, kind, p in published.events if kind == "lock-released"]
    assert released == [
        {
            "case_id": 7,
            "field": "notes",
            "user": {"id": 1, "name": "Alice"},
            "client_id": None,
            "reason": "transferred",
            "to": {"id": 2, "name": "Bob"},
        }
    ]
    assert published.kinds()[-3:] == ["lock-released", "lock-acquired", "lock-request-answered"]
    with pytest.raises(NotFound):
        await asked.answer(request_id=request.id, user_id=1, client_id="tab-a", answer="keep")


async def test_keep_tells_the_asker_and_changes_nothing(
    asked: LockRequests, published: Recorder
) -> None:
    first = await hold(asked)
    request = await ask(asked)
    assert isinstance(request, LockRequest)
    answer = await asked.answer(request_id=request.id, user_id=1, client_id="tab-a", answer="keep")
    assert answer["answer"] == "kept" and answers(published) == ["kept"]
    assert await asked.locks.get(case_id=7, field="notes") == first


async def test_answering_for_a_lock_that_went_is_lock_gone(
    asked: LockRequests, published: Recorder
) -> None:
    await hold(asked)
    request = await ask(asked)
    assert isinstance(request, LockRequest)
    await asked.locks.release(case_id=7, branch_id=1, field="notes", user_id=1, client_id="tab-a")
    with pytest.raises(LockGone):
        await asked.answer(request_id=request.id, user_id=1, client_id="tab-a", answer="release")
    assert answers(published) == ["lock_gone"]


async def test_no_answer_passes_the_lock_only_once_the_holder_is_idle(
    asked: LockRequests, published: Recorder, clock: Clock
) -> None:
    await hold(asked)
    request = await ask(asked)
    assert isinstance(request, LockRequest)
    clock.advance(10)
    # Alice types (a save, or her tab's touch) 10 s in: 15 s of quiet count from here.
    assert await asked.locks.touch(case_id=7, field="notes", user_id=1, client_id="tab-a")
    clock.advance(5.5)
    assert await asked.sweep() == 0  # asked 15.5 s ago, but typing 5.5 s ago
    clock.advance(9)
    assert await asked.sweep() == 0
    clock.advance(0.6)
    assert await asked.sweep() == 1
    assert answers(published) == ["timeout"]
    held = await asked.locks.get(case_id=7, field="notes")
    assert held is not None and held.owner == BOB
    assert await asked.sweep() == 0


async def test_a_request_ends_when_the_lock_goes_or_the_asker_left(
    asked: LockRequests, published: Recorder, clock: Clock
) -> None:
    await hold(asked)
    await ask(asked)
    await asked.locks.release_client(branch_id=1, user_id=1, client_id="tab-a")
    assert await asked.sweep() == 1
    assert answers(published) == ["lock_gone"]
    # Asked, then Bob's tab left: at the timeout nobody gets Alice's lock.
    await hold(asked)
    await ask(asked)
    asked.away.add("tab-b")  # type: ignore[attr-defined]
    clock.advance(TIMEOUT + 1)
    assert await asked.sweep() == 1
    assert answers(published) == ["lock_gone", "withdrawn"]
    metrics = asked._metrics  # the counter this service feeds
    assert metrics is not None
    for answer in ("lock_gone", "withdrawn"):
        sample = metrics.registry.get_sample_value(
            "warrantysync_lock_requests_total", {"answer": answer}
        )
        assert sample == 1
    held = await asked.locks.get(case_id=7, field="notes")
    assert held is not None and held.owner == ALICE


# --- row presence ---------------------------------------------------------------


def spot(owner: Owner, case_id: int, field: str | None = None, **flags: bool) -> Spot:
    return Spot(
        owner.user_id,
        owner.name,
        owner.client_id,
        case_id,
        field,
        flags.get("editing", False),
        flags.get("idle", False),
    )


def test_merge_counts_people_not_tabs() -> None:
    alice_2 = Owner(1, "Alice", "tab-a2")
    rows = merge(
        [
            spot(ALICE, 7, idle=True),
            spot(alice_2, 7, "notes", editing=True),
            spot(BOB, 7),
            spot(DAVE, 8, idle=True),
        ]
    )
    assert rows == [
        {"case_id": 7, "user": {"id": 1, "name": "Alice"}, "state": "editing", "field": "notes"},
        {"case_id": 7, "user": {"id": 2, "name": "Bob"}, "state": "viewing", "field": None},
        {"case_id": 8, "user": {"id": 4, "name": "Dave"}, "state": "idle", "field": None},
    ]


@pytest.fixture(params=LOCK_BACKENDS)
async def rows(
    request: pytest.FixtureRequest, clock: Clock, published: Recorder
) -> AsyncIterator[RowPresence]:
    service = RowPresence(
        rows_backend_for(request.param, request), publish=published, ttl=90, clock=clock
    )
    yield service
    await service.close()


def announced(published: Recorder) -> list[Any]:
    return [p["rows"] for _, kind, p in published.events if kind == "row-presence"]


async def test_row_presence_announces_changes_only(rows: RowPresence, published: Recorder) -> None:
    await rows.report(branch_id=1, spot=spot(ALICE, 7), user_id=1, client_id="tab-a")
    await rows.report(branch_id=1, spot=spot(ALICE, 7), user_id=1, client_id="tab-a")
    assert len(announced(published)) == 1  # the same spot again only keeps it alive
    await rows.report(branch_id=1, spot=spot(ALICE, 8), user_id=1, client_id="tab-a")
    assert [r["case_id"] for r in announced(published)[-1]] == [8]
    await rows.report(branch_id=2, spot=spot(BOB, 9), user_id=2, client_id="tab-b")
    assert [r["case_id"] for r in await rows.rows(branch_id=1)] == [8]
    await rows.report(branch_id=1, spot=None, user_id=1, client_id="tab-a")
    assert announced(published)[-1] == []
    await rows.forget_client(branch_id=2, user_id=2, client_id="tab-b")
    assert await rows.rows(branch_id=2) == []
    assert len(announced(published)) == 5


async def test_a_browser_stream_gone_takes_the_spots_of_all_its_tabs(
    rows: RowPresence,
) -> None:
    """Tabs sharing one stream report as <browser>.<tab> (docs/protocol.md, "Tabs sharing one
    stream"); when the browser's stream is gone for good, all of them leave, no one else."""
    tabs = [Owner(1, "Alice", f"br0wser.t{n}") for n in (1, 2)]
    others = [Owner(1, "Alice", "br0wser2.t1"), Owner(2, "Bob", "br0wser.t1")]
    for n, owner in enumerate([*tabs, *others]):
        await rows.report(
            branch_id=1, spot=spot(owner, 10 + n), user_id=owner.user_id, client_id=owner.client_id
        )
    await rows.forget_connection(branch_id=1, user_id=1, connection_id="br0wser")
    assert [r["case_id"] for r in await rows.rows(branch_id=1)] == [12, 13]


async def test_a_spot_not_reported_again_lapses(rows: RowPresence, clock: Clock) -> None:
    await rows.report(branch_id=1, spot=spot(ALICE, 7), user_id=1, client_id="tab-a")
    clock.advance(60)
    await rows.report(branch_id=1, spot=spot(BOB, 7), user_id=2, client_id="tab-b")
    clock.advance(31)
    assert [r["user"]["name"] for r in await rows.rows(branch_id=1)] == ["Bob"]
