"""Engine and sessions for the three supported databases.

``Database.write()`` is the only way to change data. On SQLite it starts the
transaction with ``BEGIN IMMEDIATE`` so two writers never both read and then
both try to upgrade their lock (which SQLite answers with "database is
locked" instead of waiting); on PostgreSQL and MySQL the row locks taken by
``SELECT … FOR UPDATE`` and the counter ``UPDATE`` serialise writers of one
case and one branch. With group commit (the default on SQLite,
``storage/groupcommit.py``) concurrent writers take turns in-process and
share that transaction and its ``COMMIT`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..errors import WarrantySyncError
from . import durability, failures, sqlite
from .groupcommit import GroupCommit
from .models import Counter

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 10_000
DEFAULT_TIMEOUT = 10.0  # seconds; WARRANTYSYNC_DATABASE_TIMEOUT
PROBE_COUNTER = "readiness_probe"
PROBE_FRESH = 1.0  # seconds one write probe's outcome answers every later caller


def _configure_sqlite(engine: AsyncEngine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin, so
        # the "begin" hook below can choose IMMEDIATE for writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        _use_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA foreign_keys=ON")
        # A 200 means the change is on the disk: in WAL mode only FULL syncs
        # the log at every commit; NORMAL lets a power cut or kernel crash
        # take the last acknowledged saves (docs/security.md, "Failures").
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cursor: Any, patience: float) -> None:
    """Put the file in WAL mode (a setting the file keeps), waiting up to ``patience``
    seconds while another process writes.

    A file already in WAL mode (any migrated database) needs nothing. A new
    one needs an exclusive lock, and SQLite answers "database is locked" at
    once, without its busy handler, while another connection holds the write
    lock (two ``warrantysync db upgrade`` on a new file): so try again.
    """
    cursor.execute("PRAGMA journal_mode")
    if cursor.fetchone()[0].lower() == "wal":
        return
    deadline = time.monotonic() + patience
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:
            if failures.classify(exc) is not failures.Failure.BUSY or time.monotonic() > deadline:
                raise
        time.sleep(0.05)  # only before the first migration: a served file is in WAL mode


def create_engine(
    url: str,
    *,
    one_trip: bool = True,
    busy_timeout_ms: int = SQLITE_BUSY_TIMEOUT_MS,
    **kwargs: Any,
) -> AsyncEngine:
    """``one_trip``: SQLite through ``storage/sqlite.py``'s one-trip cursor, where it works.
    ``busy_timeout_ms``: how long a SQLite statement waits for another process's lock."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        options = sqlite.engine_options(url) if one_trip else {}
        engine = create_async_engine(url, **{**options, **kwargs})
        _configure_sqlite(engine, busy_timeout_ms)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(url, **kwargs)


class Database:
    """Owns the engine; hands out read and write sessions.

    Every session turns a failure of the database itself (see
    ``storage/failures.py``) into ``Unavailable`` — 503 with ``Retry-After``
    at the edge — and logs it as one line; other errors pass unchanged.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check_durability: bool = False,
        one_trip: bool = True,
        group_commit: bool = True,
        **engine_kwargs: Any,
    ) -> None:
        self.url = url
        # A database that stops answering (a frozen host, a dead network path)
        # leaves queries hanging with the socket still open; without a deadline
        # every request would hang with it instead of answering 503.
        self.timeout = timeout
        self.engine = create_engine(url, one_trip=one_trip, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        # Which SQLite path runs (docs/performance.md, "Transport fast paths").
        self.sqlite_path = sqlite.path_of(self.engine)
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write = async_sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )
        # SQLite only: elsewhere writers of different rows commit in parallel.
        self.group = GroupCommit(self.engine) if group_commit and self.dialect == "sqlite" else None
        self._probe: asyncio.Future[None] | None = None
        self._probe_started = 0.0
        if check_durability:
            self._check_durability_on_first_connect()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        try:
            async with asyncio.timeout(self.timeout), self._read() as session:
                yield session
        except Exception as exc:
            _raise_if_unavailable(exc)
            raise

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction whose statements all see one point in time.

        SQLite (WAL) and MySQL's default REPEATABLE READ already give that;
        PostgreSQL's default READ COMMITTED does not, so ask for it.
        """
        async with self.read() as session:
            if self.dialect == "postgresql":
                await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    @asynccontextmanager
    async def write(self, *, bulk: bool = False) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends without error.

        A timeout or a connection lost during the commit leaves its outcome
        unknown: the caller answers 503, and a retry with the same
        Idempotency-Key finds out which it was.

        ``bulk``: the block's statements may touch many rows (a sweep, an
        import). On SQLite a write's statements otherwise run on the event
        loop's thread, which such a statement would hold for long
        (``storage/sqlite.py``).
        """
        with sqlite.off_loop() if bulk else contextlib.nullcontext():
            if self.group is None:
                async with self._transaction(self.timeout) as session:
                    yield session
                return
            try:
                async with asyncio.timeout(self.timeout), self.group.write() as session:
                    yield session
            except Exception as exc:
                _raise_if_unavailable(exc)
                raise

    @asynccontextmanager
    async def one_transaction(self, *, time_limit: float) -> AsyncIterator[Database]:
        """A ``Database`` whose every session is this one write transaction.

        For work written as many steps through the services that must still
        be all or nothing (``warrantysync demo``): each step's ``read()`` and
        ``write()`` join the transaction, which commits when the block ends
        and rolls everything back if any step fails.
        """
        async with self._transaction(time_limit) as session:
            yield _InTransaction(self, session)

    @asynccontextmanager
    async def _transaction(self, time_limit: float) -> AsyncIterator[AsyncSession]:
        try:
            async with asyncio.timeout(time_limit), self._write() as session, session.begin():
                yield session
        except Exception as exc:
            _raise_if_unavailable(exc)
            raise

    async def probe(self) -> None:
        """Prove that the database takes a write now (``/readyz``); raises ``Unavailable``.

        A real write transaction (a counter row bumped and committed), so a
        full disk, an I/O error or a read-only database fail it where a
        ``SELECT`` would still pass. Callers within ``PROBE_FRESH`` seconds
        share one probe: hammering ``/readyz`` costs at most one write a second.
        """
        now = asyncio.get_running_loop().time()
        fresh = now - self._probe_started < PROBE_FRESH
        if self._probe is None or (self._probe.done() and not fresh):
            self._probe_started = now
            self._probe = asyncio.ensure_future(self._write_probe())
            # Marks the outcome as seen even if every caller was cancelled.
            self._probe.add_done_callback(lambda done: done.cancelled() or done.exception())
        await asyncio.shield(self._probe)

    async def _write_probe(self) -> None:
        try:
            async with self.write() as session:
                bumped = await session.execute(
                    update(Counter)
                    .where(Counter.name == PROBE_COUNTER)
                    .values(value=Counter.value + 1)
                )
                if bumped.rowcount == 0:  # type: ignore[attr-defined]
                    session.add(Counter(name=PROBE_COUNTER, value=1))
        except IntegrityError:
            pass  # another node created the row at the same moment: writes work

    async def dispose(self) -> None:
        # A probe whose callers have all gone may still be writing: let it end
        # first, so no connection is in use while the engine goes away.
        if self._probe is not None and not self._probe.done():
            await asyncio.gather(self._probe, return_exceptions=True)
        if self.group is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self.group.close()
        await self.engine.dispose()

    def _check_durability_on_first_connect(self) -> None:
        # On the first connection that succeeds, not at startup: the database
        # may well be down when the server starts.
        dialect = self.dialect

        @event.listens_for(self.engine.sync_engine, "first_connect")
        def _check(dbapi_connection: Any, _record: Any) -> None:
            try:
                found = durability.problems(dialect, dbapi_connection)
            except Exception as exc:
                log.warning("could not check the database's durability settings: %s", exc)
                return
            for problem in found:
                log.warning("acknowledged saves are at risk: %s", problem)


class _InTransaction(Database):
    """``Database.one_transaction()``'s view: every session is the one open transaction."""

    def __init__(self, outer: Database, session: AsyncSession) -> None:  # no engine of its own
        self.url, self.timeout, self.engine = outer.url, outer.timeout, outer.engine
        self.dialect, self.sqlite_path = outer.dialect, outer.sqlite_path
        self.group = None
        self._session = session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        yield self._session

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncSession]:
        yield self._session  # joins the transaction, at the isolation it began with

    @asynccontextmanager
    async def write(self, *, bulk: bool = False) -> AsyncIterator[AsyncSession]:
        with sqlite.off_loop() if bulk else contextlib.nullcontext():
            yield self._session

    async def probe(self) -> None:
        raise TypeError("no readiness probe inside a transaction")


def _raise_if_unavailable(exc: Exception) -> None:
    """Raise ``Unavailable`` (logged once) for a failure of the database itself."""
    if isinstance(exc, WarrantySyncError):
        return  # a domain error, or a nested session's Unavailable: already decided
    failure = failures.classify(exc)
    if failure is not None:
        log.warning("database unavailable: %s", failures.describe(exc))
        raise failures.unavailable(failure) from exc
