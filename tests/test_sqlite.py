"""storage/sqlite.py: one trip to aiosqlite's thread per statement, none in a write.

These fail when the fast path silently stops being taken: the installed
aiosqlite or SQLAlchemy no longer has what it relies on (``supported``), an
engine comes up with the stock adapter, a statement costs more than one
trip, or a write's statement leaves the loop's thread. The rest checks it
answers as the stock cursor does, and that a statement which may take long
(a read, a bulk write, a cancelled trip still running) stays off the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from warrantysync.storage import sqlite
from warrantysync.storage.db import Database


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    yield database
    await database.dispose()


async def _cursor_class(db: Database) -> type:
    """The class of the cursors the engine's DBAPI connections make."""

    def made(sync: Any) -> type:
        cursor = sync.connection.dbapi_connection.cursor()
        try:
            return type(cursor)
        finally:
            cursor.close()

    async with db.engine.connect() as conn:
        return await conn.run_sync(made)


def test_the_installed_libraries_have_what_the_cursor_uses() -> None:
    assert sqlite.supported(), "aiosqlite or SQLAlchemy moved a private name: see storage/sqlite.py"


async def test_an_engine_uses_the_one_trip_cursor(db: Database) -> None:
    assert db.sqlite_path == sqlite.ONE_TRIP
    assert await _cursor_class(db) is sqlite.OneTripCursor


async def test_turned_off_an_engine_keeps_the_stock_adapter(db_url: str) -> None:
    stock = Database(db_url, one_trip=False)
    try:
        assert stock.sqlite_path == sqlite.STOCK
        assert not issubclass(await _cursor_class(stock), sqlite.OneTripCursor)
        async with stock.read() as session:
            assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await stock.dispose()


async def test_a_statement_is_one_trip_to_the_driver_thread(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with db.read() as session:
        await session.execute(text("SELECT 1"))  # connected, transaction begun
        trips = 0
        execute: Any = aiosqlite.Connection._execute

        async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal trips
            trips += 1
            return await execute(self, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
        rows = (await session.execute(text("SELECT id FROM branches ORDER BY id"))).all()
        assert rows == []
        assert trips == 1  # the stock adapter makes four: cursor, execute, fetch, close


async def test_rows_counts_and_ids_come_back_as_from_the_stock_cursor(db: Database) -> None:
    async with db.write() as session:
        inserted = await session.execute(
            text("INSERT INTO branches (name, timezone, last_event_id) VALUES ('A', 'UTC', 0)")
        )
        first = inserted.lastrowid  # type: ignore[attr-defined]
        await session.execute(
            text("INSERT INTO branches (name, timezone, last_event_id) VALUES (:n, 'UTC', 0)"),
            [{"n": "B"}, {"n": "C"}],
        )
        bumped = await session.execute(
            text("UPDATE branches SET last_event_id = last_event_id + 1 RETURNING id")
        )
        assert sorted(bumped.scalars()) == [first, first + 1, first + 2]
        # For DML with RETURNING, sqlite3 counts rows only once all were stepped through.
        assert bumped.rowcount == 3  # type: ignore[attr-defined]
        updated = await session.execute(text("UPDATE branches SET name = name || '!'"))
        assert updated.rowcount == 3  # type: ignore[attr-defined]
    async with db.read() as session:
        names = (await session.execute(text("SELECT name FROM branches ORDER BY id"))).scalars()
        assert list(names) == ["A!", "B!", "C!"]


async def test_errors_are_the_dialects_as_before(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            insert = (
                "INSERT INTO branches (id, name, timezone, last_event_id) VALUES (1, :n, 'UTC', 0)"
            )
            await session.execute(text(insert), {"n": "A"})
            await session.execute(text(insert), {"n": "B"})
    async with db.read() as session:  # rolled back whole, the connection still good
        assert (await session.execute(text("SELECT count(*) FROM branches"))).scalar_one() == 0


async def _thread_of_statements(session: Any) -> int:
    """The id of the thread a statement of ``session`` runs on, asked of SQLite itself."""
    raw = await session.connection()
    sync_conn = (await raw.get_raw_connection()).driver_connection
    await sync_conn.create_function("thread_id", 0, threading.get_ident)
    return int((await session.execute(text("SELECT thread_id()"))).scalar_one())


async def test_a_writes_statements_run_on_the_loops_thread(db: Database) -> None:
    async with db.write() as session:
        assert await _thread_of_statements(session) == threading.get_ident()


async def test_reads_and_bulk_writes_run_on_the_drivers_thread(db: Database) -> None:
    async with db.read() as session:
        assert await _thread_of_statements(session) != threading.get_ident()
    async with db.write(bulk=True) as session:
        assert await _thread_of_statements(session) != threading.get_ident()


async def test_a_write_trips_only_to_begin_commit_and_for_many_rows(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    execute: Any = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(args[2] if fn is sqlite._counted else getattr(fn, "__name__", "?"))
        return await execute(self, fn, *args, **kwargs)

    async with db.write() as session:
        await session.execute(text("SELECT 1"))  # connected and begun before counting
    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    insert = text("INSERT INTO branches (name, timezone, last_event_id) VALUES (:n, 'UTC', 0)")
    async with db.write() as session:
        await session.execute(insert, [{"n": f"few {i}"} for i in range(sqlite.INLINE_ROWS)])
        await session.execute(text("UPDATE branches SET last_event_id = 1"))
        assert trips == ["BEGIN IMMEDIATE"]
        await session.execute(insert, [{"n": f"many {i}"} for i in range(sqlite.INLINE_ROWS + 1)])
        assert len(trips) == 2 and trips[1].startswith("INSERT INTO branches")
    assert trips[2:] == ["commit"]
    async with db.read() as session:
        count = (await session.execute(text("SELECT count(*) FROM branches"))).scalar_one()
        assert count == 2 * sqlite.INLINE_ROWS + 1


async def test_nothing_runs_inline_while_a_cancelled_trip_still_runs(db: Database) -> None:
    """A trip whose caller gave up keeps the connection on the driver's thread until it ends.

    Driven on the cursor itself: a session would throw the connection away
    on the cancellation, which is what makes the case rare.
    """
    released = threading.Event()

    def slow() -> int:
        released.wait(10)
        return 1

    async with db.engine.connect() as conn:
        adapted = (await conn.get_raw_connection()).dbapi_connection
        assert isinstance(adapted, sqlite.OneTripConnection)
        await adapted.driver_connection.create_function("slow", 0, slow)
        await adapted.driver_connection.create_function("thread_id", 0, threading.get_ident)
        cursor: Any = adapted.cursor()
        sqlite3_conn = adapted.driver_connection._conn
        await cursor._one_trip("BEGIN IMMEDIATE", None, many=False)
        assert adapted.inline_ok(sqlite3_conn, None, False)
        with sqlite.off_loop():
            waiting = asyncio.ensure_future(cursor._one_trip("SELECT slow()", None, many=False))
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert adapted.writing and sqlite3_conn.in_transaction
        assert not adapted.inline_ok(sqlite3_conn, None, False)  # slow() still runs there
        released.set()
        for _ in range(100):
            if adapted.inline_ok(sqlite3_conn, None, False):
                break
            await asyncio.sleep(0.02)
        await cursor._one_trip("SELECT thread_id()", None, many=False)
        assert cursor.fetchone()[0] == threading.get_ident()
        await cursor._one_trip("ROLLBACK", None, many=False)
