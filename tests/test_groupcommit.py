"""storage/groupcommit.py: concurrent SQLite writers share one transaction and one COMMIT.

Against real SQLite files. ``window`` is an hour wherever a test needs every
writer in one batch: the batch then ends exactly when nobody waits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from sqlalchemy import text

from conftest import login, make_settings
from factories import World
from warrantysync.errors import Unavailable
from warrantysync.storage.db import Database
from warrantysync.storage.groupcommit import _Turns

HOUR = 3600.0
GUARD = 60.0  # seconds: only against a wedged test, never an assertion on speed


class Refused(Exception):
    """A domain error raised inside a write block."""


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    assert database.group is not None
    database.group.window = HOUR
    yield database
    await database.dispose()


def _file(db: Database) -> str:
    return db.url.removeprefix("sqlite+aiosqlite:///")


def committed(db: Database) -> dict[str, int]:
    """The test's rows as a fresh connection of another library sees them on the disk."""
    with sqlite3.connect(_file(db)) as conn:
        rows = conn.execute("SELECT name, value FROM counters WHERE name LIKE 'gc-%'").fetchall()
    return dict(rows)


async def put(db: Database, name: str, *, then: Callable[[], Awaitable[None]] | None = None) -> str:
    async with db.write() as session:
        await session.execute(
            text("INSERT INTO counters (name, value) VALUES (:name, 1)"), {"name": name}
        )
        if then is not None:
            await then()
    return name


async def refuse() -> None:
    raise Refused


def commits(db: Database) -> list[int]:
    seen: list[int] = []
    assert db.group is not None
    db.group.on_commit = seen.append
    return seen


async def test_concurrent_writes_share_one_commit_and_are_all_durable(db: Database) -> None:
    seen = commits(db)
    names = [f"gc-{n}" for n in range(6)]
    async with asyncio.timeout(GUARD):
        assert await asyncio.gather(*(put(db, name) for name in names)) == names
    assert seen == [6]
    assert committed(db) == dict.fromkeys(names, 1)


async def test_a_full_batch_commits_and_the_rest_begin_the_next(db: Database) -> None:
    assert db.group is not None
    db.group.max_members = 4
    seen = commits(db)
    names = [f"gc-{n}" for n in range(10)]
    async with asyncio.timeout(GUARD):
        await asyncio.gather(*(put(db, name) for name in names))
    assert seen == [4, 4, 2]
    assert committed(db) == dict.fromkeys(names, 1)


@pytest.mark.parametrize("failing", [0, 1, 2])
async def test_a_member_raising_rolls_back_only_its_own_changes(db: Database, failing: int) -> None:
    seen = commits(db)
    names = [f"gc-{n}" for n in range(3)]
    outcomes = await asyncio.gather(
        *(put(db, name, then=refuse if n == failing else None) for n, name in enumerate(names)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[failing], Refused)
    kept = [name for n, name in enumerate(names) if n != failing]
    assert [o for o in outcomes if isinstance(o, str)] == kept
    assert committed(db) == dict.fromkeys(kept, 1)
    # The first member's rollback is its transaction's: the others begin another.
    assert seen == ([2] if failing == 0 else [3])


async def test_a_commit_that_fails_fails_every_member_and_the_connection_goes_on(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with sqlite3.connect(_file(db)) as conn:
        conn.execute("CREATE TABLE gc_parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE gc_child (id INTEGER PRIMARY KEY, parent INTEGER"
            " REFERENCES gc_parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    async def orphan() -> None:
        async with db.write() as session:
            await session.execute(text("INSERT INTO gc_child (id, parent) VALUES (1, 42)"))

    seen = commits(db)
    await put(db, "gc-first")
    assert db.group is not None
    writer = db.group._conn
    with caplog.at_level(logging.WARNING, logger="warrantysync.storage.db"):
        outcomes = await asyncio.gather(
            put(db, "gc-a"), orphan(), put(db, "gc-b"), return_exceptions=True
        )
    assert all(isinstance(o, Unavailable) for o in outcomes), outcomes
    assert committed(db) == {"gc-first": 1}
    assert seen == [1]
    unavailable = [r for r in caplog.records if "database unavailable:" in r.getMessage()]
    assert len(unavailable) == 3, [r.getMessage() for r in unavailable]
    assert "FOREIGN KEY" in unavailable[0].getMessage()

    assert await put(db, "gc-c") == "gc-c"
    assert committed(db) == {"gc-first": 1, "gc-c": 1}
    assert seen == [1, 1]
    # Rolled back, not closed: closing would delete the WAL (docs/performance.md, "Group commit").
    assert db.group._conn is writer


async def test_a_database_failure_inside_a_block_fails_the_whole_batch(db: Database) -> None:
    # A failure of the database is recognised by its code, not a message.
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]

    async def disk_full() -> None:
        raise full

    seen = commits(db)
    outcomes = await asyncio.gather(
        put(db, "gc-a"), put(db, "gc-b", then=disk_full), put(db, "gc-c"), return_exceptions=True
    )
    # "gc-a" shared the broken transaction; "gc-c", still waiting, begins the next.
    assert [type(o) for o in outcomes] == [Unavailable, Unavailable, str], outcomes
    assert committed(db) == {"gc-c": 1}
    assert seen == [1]


async def test_cancelled_while_waiting_for_its_turn_does_not_wedge(db: Database) -> None:
    seen = commits(db)
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        inside.set()
        await release.wait()

    holder = asyncio.create_task(put(db, "gc-holder", then=hold))
    await inside.wait()
    waiter = asyncio.create_task(put(db, "gc-cancelled"))
    behind = asyncio.create_task(put(db, "gc-behind"))
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    async with asyncio.timeout(GUARD):
        assert await holder == "gc-holder"
        assert await behind == "gc-behind"
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await put(db, "gc-after") == "gc-after"
    assert committed(db) == {"gc-holder": 1, "gc-behind": 1, "gc-after": 1}
    assert seen == [2, 1]


async def test_cancelled_just_as_its_turn_came_passes_it_on(db: Database) -> None:
    """The turn reaches a writer whose cancellation is already on its way."""
    seen = commits(db)
    done = asyncio.Event()
    tasks: dict[str, asyncio.Task[str]] = {}

    async def finish() -> None:
        done.set()  # the holder leaves without another await: its turn goes to "gc-next"

    async def cancel_next() -> None:
        await done.wait()
        tasks["gc-next"].cancel()  # after the hand-over, before "gc-next" ran again

    canceller = asyncio.create_task(cancel_next())
    await asyncio.sleep(0)
    tasks["gc-holder"] = asyncio.create_task(put(db, "gc-holder", then=finish))
    tasks["gc-next"] = asyncio.create_task(put(db, "gc-next"))
    tasks["gc-last"] = asyncio.create_task(put(db, "gc-last"))
    async with asyncio.timeout(GUARD):
        await canceller
        assert await tasks["gc-holder"] == "gc-holder"
        assert await tasks["gc-last"] == "gc-last"
        with pytest.raises(asyncio.CancelledError):
            await tasks["gc-next"]
        assert await put(db, "gc-after") == "gc-after"
    assert committed(db) == {"gc-holder": 1, "gc-last": 1, "gc-after": 1}
    assert seen == [2, 1]


async def test_turns_cancelled_after_the_hand_over_hand_on() -> None:
    turns = _Turns()
    handed_on: list[str] = []
    await turns.take(hand_on=lambda: handed_on.append("holder"))
    waiter = asyncio.create_task(turns.take(hand_on=lambda: handed_on.append("waiter")))
    await asyncio.sleep(0)
    assert turns.waiting() == 1
    turns.give()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert handed_on == ["waiter"]


@pytest.mark.parametrize("cancelled", [0, 1])
async def test_cancelled_inside_its_block_undoes_only_its_changes(
    db: Database, cancelled: int
) -> None:
    inside = asyncio.Event()

    async def hang() -> None:
        inside.set()
        await asyncio.Event().wait()

    names = ["gc-a", "gc-b", "gc-c"]
    tasks = [
        asyncio.create_task(put(db, name, then=hang if n == cancelled else None))
        for n, name in enumerate(names)
    ]
    await inside.wait()
    tasks[cancelled].cancel()
    async with asyncio.timeout(GUARD):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(outcomes[cancelled], asyncio.CancelledError)
        assert await put(db, "gc-after") == "gc-after"
    kept = [name for n, name in enumerate(names) if n != cancelled]
    assert committed(db) == dict.fromkeys([*kept, "gc-after"], 1)


async def test_a_writer_past_its_deadline_answers_unavailable(db: Database) -> None:
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold() -> None:
        inside.set()
        await release.wait()

    holder = asyncio.create_task(put(db, "gc-holder", then=hold))
    await inside.wait()
    db.timeout = 0.2  # for the writer that comes next, never for the holder
    with pytest.raises(Unavailable) as late:
        async with asyncio.timeout(GUARD):
            await put(db, "gc-late")
    assert "did not answer in time" in late.value.message
    release.set()
    db.timeout = GUARD
    assert await holder == "gc-holder"
    assert await put(db, "gc-after") == "gc-after"
    assert committed(db) == {"gc-holder": 1, "gc-after": 1}


async def test_turned_off_every_write_has_a_transaction_of_its_own(db_url: str) -> None:
    plain = Database(db_url, group_commit=False)
    try:
        assert plain.group is None
        names = [f"gc-{n}" for n in range(3)]
        await asyncio.gather(*(put(plain, name) for name in names))
        assert committed(plain) == dict.fromkeys(names, 1)
    finally:
        await plain.dispose()


async def test_the_app_counts_writers_per_commit(client: httpx.AsyncClient, world: World) -> None:
    await login(client, "alice@example.com")  # a login writes its session
    metrics = (await client.get("/metrics")).text
    assert "warrantysync_sqlite_commit_writers_bucket" in metrics
    count = [line for line in metrics.splitlines() if "commit_writers_count" in line]
    assert count and float(count[0].split()[-1]) >= 1, count


def test_the_setting_turns_it_off(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARRANTYSYNC_GROUP_COMMIT", "off")
    assert make_settings(db_url).group_commit is False
    monkeypatch.delenv("WARRANTYSYNC_GROUP_COMMIT")
    assert make_settings(db_url).group_commit is True


async def test_a_write_inside_a_write_raises_at_once(db: Database) -> None:
    """Its turn would come only after the block holding it ends, which waits for it."""
    async with asyncio.timeout(GUARD):
        with pytest.raises(RuntimeError, match="a write inside a write"):
            async with db.write():
                await put(db, "gc-nested")
        async with db.write():  # a task started in a block takes a turn of its own
            child = asyncio.create_task(put(db, "gc-child"))
        assert await child == "gc-child"
    assert committed(db) == {"gc-child": 1}
