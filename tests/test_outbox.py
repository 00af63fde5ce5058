"""The durable event log (storage/outbox.py), as docs/protocol.md "The event stream" reads it.

Ids are per branch, contiguous and in commit order; a write that rolls back
takes no id; a resume reads the suffix after its id; pruning drops only the
oldest events and never moves the head. On SQLite, fast; concurrent writers
on PostgreSQL and MariaDB are in tests/test_databases.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from factories import commit_events, make_branch
from warrantysync.storage import outbox
from warrantysync.storage.db import Database


class Rollback(Exception):
    pass


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


async def test_each_branch_numbers_its_events_from_one_without_gaps(db: Database) -> None:
    north = await make_branch(db, name="North")
    south = await make_branch(db, name="South")
    north_ids = [e.event_id for e in await commit_events(db, north, 3)]
    south_ids = [e.event_id for e in await commit_events(db, south, 2)]
    north_ids += [e.event_id for e in await commit_events(db, north, 2)]
    assert north_ids == [1, 2, 3, 4, 5]
    assert south_ids == [1, 2]
    async with db.read() as session:
        assert await outbox.head(session, branch_id=north) == 5
        assert await outbox.head(session, branch_id=south) == 2


async def test_a_write_that_rolls_back_takes_no_id(db: Database) -> None:
    branch = await make_branch(db, name="North")
    await commit_events(db, branch, 1)
    with pytest.raises(Rollback):
        async with db.write() as session:
            await outbox.append_event(session, branch_id=branch, kind="case-updated", data="{}")
            raise Rollback
    (after,) = await commit_events(db, branch, 1)
    assert after.event_id == 2
    async with db.read() as session:
        rows = await outbox.events_after(session, branch_id=branch, after=0, limit=10)
    assert [row.id for row in rows] == [1, 2]


async def test_events_after_an_id_are_its_suffix_in_order_up_to_the_limit(db: Database) -> None:
    branch = await make_branch(db, name="North")
    other = await make_branch(db, name="South")
    committed = await commit_events(db, branch, 6)
    await commit_events(db, other, 6)
    async with db.read() as session:
        rows = await outbox.events_after(session, branch_id=branch, after=2, limit=3)
        rest = await outbox.events_after(session, branch_id=branch, after=6, limit=3)
    assert [row.id for row in rows] == [3, 4, 5]
    assert [row.data.encode() for row in rows] == [e.data for e in committed[2:5]]
    assert all(row.branch_id == branch for row in rows)
    assert list(rest) == []


async def test_pruning_keeps_the_newest_and_leaves_the_head(db: Database) -> None:
    branch = await make_branch(db, name="North")
    other = await make_branch(db, name="South")
    await commit_events(db, branch, 5)
    await commit_events(db, other, 5)
    async with db.write() as session:
        assert await outbox.prune(session, branch_id=branch, keep=2) == 3
    async with db.read() as session:
        assert await outbox.oldest_id(session, branch_id=branch) == 4
        assert await outbox.head(session, branch_id=branch) == 5
        assert await outbox.oldest_id(session, branch_id=other) == 1
    async with db.write() as session:
        assert await outbox.prune(session, branch_id=branch, keep=2) == 0
    (next_event,) = await commit_events(db, branch, 1)
    assert next_event.event_id == 6


async def test_an_empty_branch_has_head_zero_and_no_oldest(db: Database) -> None:
    branch = await make_branch(db, name="North")
    async with db.read() as session:
        assert await outbox.head(session, branch_id=branch) == 0
        assert await outbox.oldest_id(session, branch_id=branch) is None


async def test_a_named_counter_starts_at_one_on_first_use(db: Database) -> None:
    async with db.write() as session:
        first = await outbox.next_counter(session, name="test_counter")
    async with db.write() as session:
        second = await outbox.next_counter(session, name="test_counter")
    assert (first, second) == (1, 2)
