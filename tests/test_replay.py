"""Catching a resuming stream up (services/broker/replay.py): ring, outbox, bounded admission.

Every decision is counted once in ``warrantysync_resumes_total{outcome}``.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from factories import commit_events, seed_world
from waits import failed_connections_stopped, sqlite_worker_threads, until
from warrantysync.errors import Unavailable
from warrantysync.services.broker import Broker, Overloaded
from warrantysync.services.broker.memory import MemoryBrokerBackend
from warrantysync.services.broker.replay import NOT_RETAINED, UNKNOWN
from warrantysync.services.events import Event
from warrantysync.services.metrics import Metrics
from warrantysync.storage import outbox
from warrantysync.storage.db import Database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


async def _broker(db: Database, **limits: object) -> Broker:
    broker = Broker(MemoryBrokerBackend(), db=db, metrics=Metrics(), **limits)  # type: ignore[arg-type]
    await broker.start()
    return broker


def _count(broker: Broker, outcome: str) -> float:
    value = broker.metrics.registry.get_sample_value(
        "warrantysync_resumes_total", {"outcome": outcome}
    )
    return value or 0.0


def _source(broker: Broker, source: str) -> float:
    value = broker.metrics.registry.get_sample_value(
        "warrantysync_replays_total", {"source": source}
    )
    return value or 0.0


async def test_every_decision_is_counted_once(db: Database) -> None:
    world = await seed_world(db)
    branch = world.branches["downtown"]
    broker = await _broker(db, ring_size=2)
    try:
        await broker.ordering.know_head(branch)
        start = broker.head(branch)
        for event in await commit_events(db, branch, 4):
            await broker.publish(event)  # seen live: the newest two stay in the ring
        head = start + 4
        decisions = [
            (None, "fresh", head, 0, None),
            (str(head), "current", head, 0, None),
            (str(head - 2), "memory", head, 2, None),
            (str(start), "database", head, 4, None),
            ("not-a-number", "sync_required", head, 0, UNKNOWN),
            (str(head + 5), "sync_required", head, 0, UNKNOWN),
        ]
        for resume, outcome, caught_up, replayed, reason in decisions:
            before = _count(broker, outcome)
            caught = await broker.catch_up(branch, resume)
            assert (caught.caught_up, len(caught.events), caught.sync_required) == (
                caught_up,
                replayed,
                reason,
            ), resume
            assert _count(broker, outcome) == before + 1, resume
        # The older metric still says where replays came from.
        assert (_source(broker, "memory"), _source(broker, "database")) == (1, 1)
    finally:
        await broker.stop()


async def test_a_resume_older_than_the_outbox_must_resync(db: Database) -> None:
    world = await seed_world(db)
    branch = world.branches["downtown"]
    await commit_events(db, branch, 5)
    async with db.write() as session:
        await outbox.prune(session, branch_id=branch, keep=2)
    broker = await _broker(db)
    try:
        await broker.ordering.know_head(branch)
        head = broker.head(branch)
        caught = await broker.catch_up(branch, str(head - 4))
        assert (caught.caught_up, caught.sync_required) == (head, NOT_RETAINED)
        assert _count(broker, "sync_required") == 1
    finally:
        await broker.stop()


async def test_admission_is_bounded_first_come_first_served_with_one_deadline(
    db: Database,
) -> None:
    """One read at a time, one waiting: a third is refused at once, a waiter times out."""
    world = await seed_world(db)
    branch = world.branches["downtown"]
    await commit_events(db, branch, 3)
    broker = await _broker(db, replay_concurrency=1, replay_max_pending=1, replay_deadline=0.5)
    admission = broker.replay.admission
    try:
        await broker.ordering.know_head(branch)
        head = broker.head(branch)
        async with admission.slot():  # the one read slot is busy
            waiting = asyncio.create_task(broker.catch_up(branch, str(head - 3)))
            await until(lambda: admission.waiting == 1)
            _gauge_is(broker, 1)
            with pytest.raises(Overloaded) as refused:
                await broker.catch_up(branch, str(head - 2))
            assert refused.value.outcome == "overloaded"
            # The deadline counts the wait: the slot never comes free in time.
            with pytest.raises(Overloaded) as late:
                await waiting
            assert late.value.outcome == "deadline_exceeded"
        _gauge_is(broker, 0)
        assert (_count(broker, "overloaded"), _count(broker, "deadline_exceeded")) == (1, 1)
        assert _source(broker, "refused") == 2

        order: list[str] = []

        async def resume(name: str) -> None:
            await broker.catch_up(branch, str(head - 3))
            order.append(name)

        async with admission.slot():
            first = asyncio.create_task(resume("first"))
            await until(lambda: admission.waiting == 1)
            cancelled = asyncio.create_task(broker.catch_up(branch, str(head - 1)))
            await asyncio.sleep(0.05)  # refused at once: the queue is full
            assert cancelled.done() and isinstance(cancelled.exception(), Overloaded)
        await first
        assert order == ["first"]
        assert _count(broker, "database") == 1
    finally:
        await broker.stop()


async def test_a_cancelled_wait_is_counted_and_frees_its_place(db: Database) -> None:
    world = await seed_world(db)
    branch = world.branches["downtown"]
    await commit_events(db, branch, 2)
    broker = await _broker(db, replay_concurrency=1, replay_max_pending=1)
    admission = broker.replay.admission
    try:
        await broker.ordering.know_head(branch)
        head = broker.head(branch)
        async with admission.slot():
            waiting = asyncio.create_task(broker.catch_up(branch, str(head - 2)))
            await until(lambda: admission.waiting == 1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert admission.waiting == 0
            _gauge_is(broker, 0)
        assert _count(broker, "cancelled") == 1
        caught = await broker.catch_up(branch, str(head - 2))  # the slot is free again
        assert len(caught.events) == 2
    finally:
        await broker.stop()


async def test_a_database_that_is_away_is_counted_and_refused(
    tmp_path: Path, migrated_template: Path
) -> None:
    home = tmp_path / "goes-away"
    home.mkdir()
    shutil.copy(migrated_template, home / "x.db")
    db = Database(f"sqlite+aiosqlite:///{home / 'x.db'}")
    world = await seed_world(db)
    branch = world.branches["downtown"]
    await commit_events(db, branch, 2)
    broker = await _broker(db)
    try:
        await broker.ordering.know_head(branch)
        head = broker.head(branch)
        shutil.rmtree(home)
        await db.engine.dispose()  # a new connection finds no file to open
        workers = sqlite_worker_threads()
        with pytest.raises(Unavailable):
            await broker.catch_up(branch, str(head - 2))
        await failed_connections_stopped(workers)
        assert _count(broker, "unavailable") == 1
        assert _source(broker, "refused") == 1
    finally:
        await broker.stop()
        await db.dispose()


def _gauge_is(broker: Broker, value: float) -> None:
    assert broker.metrics.registry.get_sample_value("warrantysync_replays_waiting") == value


def test_replay_from_any_retained_id_yields_exactly_the_suffix(
    tmp_path: Path, migrated_template: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    shutil.copy(migrated_template, tmp_path / "replay.db")
    count = 40

    async def build() -> tuple[int, int]:
        db = Database(url)
        try:
            world = await seed_world(db)
            branch = world.branches["downtown"]
            await commit_events(db, branch, count)
            async with db.read() as session:
                return branch, await outbox.head(session, branch_id=branch)
        finally:
            await db.dispose()

    branch, head = asyncio.run(build())

    async def check(ring_size: int, seen_live: int, resume: int) -> None:
        db = Database(url)
        broker = Broker(MemoryBrokerBackend(), db=db, metrics=Metrics(), ring_size=ring_size)
        try:
            await broker.start()
            async with db.read() as session:
                rows = await outbox.events_after(
                    session, branch_id=branch, after=head - seen_live, limit=count
                )
            for row in rows:  # this node saw the newest `seen_live` events live
                await broker.publish(Event(branch, row.kind, row.data.encode(), row.id))
            caught = await broker.catch_up(branch, str(resume))
            assert caught.sync_required is None and caught.caught_up == head
            assert [e.event_id for e in caught.events] == list(range(resume + 1, head + 1))
        finally:
            await broker.stop()
            await db.dispose()

    @settings(max_examples=60, deadline=None)
    @given(
        ring_size=st.integers(1, count + 5),
        seen_live=st.integers(1, count),
        resume=st.integers(0, head),
    )
    def property_(ring_size: int, seen_live: int, resume: int) -> None:
        asyncio.run(check(ring_size, seen_live, resume))

    property_()
