"""SQLite under asyncio: one trip to the driver's thread per statement.

aiosqlite runs every sqlite3 call on a thread of its own, and SQLAlchemy's
adapter makes four such calls per statement (create the cursor, execute,
fetch, close). Each trip is a queue put, a thread wake-up and a callback
back into the event loop: ~100 µs of CPU on a small server, so a save of a
dozen statements spent more time crossing threads than in SQLite. The cursor
below does all four in one call on that thread, through the same aiosqlite
connection and SQLAlchemy dialect (``sqlite+aiosqlite`` URLs unchanged);
everything else — pooling, transactions, error mapping — is the dialect's.
Why it stays, measured against the stock adapter: docs/performance.md,
"Transport fast paths".

It uses non-public names of both libraries, which pyproject.toml pins below
their next minor releases: aiosqlite's ``Connection._execute`` (run a
callable on the connection's thread) and ``Connection._conn``, and
SQLAlchemy's ``_cursor_cls`` on the adapted connection, whose cursor
(``AsyncAdapt_aiosqlite_cursor``) this one subclasses. All are checked when
the engine is made (``supported``); if one is missing the engine keeps the
stock adapter, and ``path_of`` — in the startup log and
``warrantysync_transport_info{sqlite}`` — says so.

Inside a write transaction the statements skip the thread altogether. Once
``BEGIN IMMEDIATE`` has returned, the connection holds SQLite's write lock,
and in WAL mode nothing else can make its statements wait: they cost only
SQLite's own work, tens of microseconds for a save's, less than the trip.
So they run inline on the event loop's thread (the connection is opened
with ``check_same_thread=False``, as SQLAlchemy does for every file
database) while the trips that can wait stay on the driver's thread: the
``BEGIN`` (another process's lock), the ``COMMIT`` (the fsync) and every
read. So do a write's statements over many rows, which could hold the loop
for long: an ``executemany`` of more than ``INLINE_ROWS`` rows, and every
statement of a block marked ``off_loop()`` (``Database.write(bulk=True)``).
Inline only while no trip of the connection is on the thread — a trip whose
caller was cancelled still runs there — so the connection is never used by
two threads at once. Measured: docs/performance.md, "Third round: CPU per
save", step 5.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import sqlite3
from collections.abc import Iterator
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

Outcome = tuple[Any, list[Any] | None, int, int | None]

ONE_TRIP = "one_trip"
STOCK = "stock"
NOT_SQLITE = "none"

INLINE_ROWS = 64  # an executemany over more rows goes to the driver's thread
_OFF_LOOP: contextvars.ContextVar[bool] = contextvars.ContextVar("sqlite_off_loop", default=False)


@contextlib.contextmanager
def off_loop() -> Iterator[None]:
    """Within the block, every statement runs on the driver's thread, even in a write."""
    token = _OFF_LOOP.set(True)
    try:
        yield
    finally:
        _OFF_LOOP.reset(token)


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> Outcome:
    """Runs on aiosqlite's thread: execute, fetch everything, close."""
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, () if parameters is None else parameters)
        description = cursor.description
        rows = cursor.fetchall() if description else None
        # Read after the fetch: for DML with RETURNING, sqlite3 counts rows
        # only once they have all been stepped through.
        return description, rows, cursor.rowcount, cursor.lastrowid
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose statement costs one thread round trip."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Any) -> None:
        # No sqlite3 cursor here: it is made, used and closed on the driver's thread.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None  # type: ignore[assignment]
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int:
        return self._lastrowid  # type: ignore[return-value]

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open on the driver's side between statements

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        return await self._one_trip(operation, parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        return await self._one_trip(operation, seq_of_parameters, many=True)

    async def _one_trip(self, operation: Any, parameters: Any, *, many: bool) -> None:
        connection: aiosqlite.Connection = self._connection  # type: ignore[assignment]
        adapted: OneTripConnection = self._adapt_connection  # type: ignore[assignment]
        async with adapted._execute_mutex:
            conn = connection._conn
            outcome: Outcome
            begins = operation.startswith("BEGIN")
            if not begins and adapted.inline_ok(conn, parameters, many):
                outcome = _run(conn, operation, parameters, many)
            else:
                if begins:
                    adapted.writing = False
                adapted.trips_sent += 1
                outcome = await connection._execute(  # type: ignore[no-untyped-call]
                    _counted, adapted, conn, operation, parameters, many
                )
                if begins:
                    adapted.writing = operation == "BEGIN IMMEDIATE"
        self._description, rows, self._rowcount, self._lastrowid = outcome
        self._rows = collections.deque(rows) if rows is not None else collections.deque()

    def nextset(self) -> None:
        return None  # one statement per execute; sqlite3 has no further sets


def _counted(
    adapted: OneTripConnection,
    conn: sqlite3.Connection,
    operation: str,
    parameters: Any,
    many: bool,
) -> Outcome:
    """``_run`` on the driver's thread, counted there as done however it ends."""
    try:
        return _run(conn, operation, parameters, many)
    finally:
        adapted.trips_done += 1


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    """The adapted connection, knowing when its statements may run inline.

    ``writing``: ``BEGIN IMMEDIATE`` returned and neither a ``COMMIT`` nor a
    ``ROLLBACK`` has been sent since. ``trips_sent`` is counted on the event
    loop's thread only, ``trips_done`` on the driver's only, so neither needs
    a lock; while they differ, a trip is queued or running over there.
    """

    __slots__ = ("trips_done", "trips_sent", "writing")
    _cursor_cls = OneTripCursor

    def __init__(self, dbapi: Any, connection: Any) -> None:
        super().__init__(dbapi, connection)
        self.writing = False
        self.trips_sent = 0
        self.trips_done = 0

    def inline_ok(self, conn: sqlite3.Connection, parameters: Any, many: bool) -> bool:
        return (
            self.writing
            and self.trips_sent == self.trips_done
            and conn.in_transaction
            and not _OFF_LOOP.get()
            and not (many and not (isinstance(parameters, list) and len(parameters) <= INLINE_ROWS))
        )

    # The transaction ends on the driver's thread; nothing runs inline from
    # here until the next BEGIN IMMEDIATE, queued behind it, has returned.
    def commit(self) -> None:
        self.writing = False
        super().commit()

    def rollback(self) -> None:
        self.writing = False
        super().rollback()

    def close(self) -> None:
        self.writing = False
        super().close()

    def terminate(self) -> None:
        self.writing = False
        super().terminate()


class OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """The dialect's DBAPI shim, handing out ``OneTripConnection``s."""

    def connect(self, *arg: Any, **kw: Any) -> OneTripConnection:
        creator_fn = kw.pop("async_creator_fn", None)
        connection = creator_fn(*arg, **kw) if creator_fn else self.aiosqlite.connect(*arg, **kw)
        # As the stock shim does, so a forgotten connection never blocks exit
        # (before aiosqlite 0.22 the connection was itself the thread).
        thread = connection if isinstance(connection, Thread) else connection._thread
        thread.daemon = True
        return OneTripConnection(self, await_(connection))


def supported() -> bool:
    return (
        callable(getattr(aiosqlite.Connection, "_execute", None))
        and hasattr(aiosqlite.Connection, "_conn")
        and getattr(AsyncAdapt_aiosqlite_connection, "_cursor_cls", None)
        is AsyncAdapt_aiosqlite_cursor
    )


def engine_options(url: str) -> dict[str, Any]:
    """Extra ``create_async_engine`` options for an aiosqlite URL."""
    if make_url(url).get_driver_name() != "aiosqlite" or not supported():
        return {}
    return {"module": OneTripDbapi(aiosqlite, sqlite3)}


def path_of(engine: AsyncEngine) -> str:
    """``one_trip``, ``stock`` (SQLite through the stock adapter) or ``none`` (not SQLite)."""
    dialect = engine.dialect
    if dialect.name != "sqlite":
        return NOT_SQLITE
    return ONE_TRIP if isinstance(dialect.loaded_dbapi, OneTripDbapi) else STOCK
