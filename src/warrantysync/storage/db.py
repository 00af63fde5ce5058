"""Engine and sessions for the three supported databases.

``Database.write()`` is the only way to change data. On SQLite it starts the
transaction with ``BEGIN IMMEDIATE`` so two writers never both read and then
both try to upgrade their lock (which SQLite answers with "database is
locked" instead of waiting); on PostgreSQL and MySQL the row locks taken by
``SELECT … FOR UPDATE`` and the counter ``UPDATE`` serialise writers of one
case and one branch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from ..errors import Unavailable
from . import sqlite

SQLITE_BUSY_TIMEOUT_MS = 10_000
DEFAULT_TIMEOUT = 10.0  # seconds; WARRANTYSYNC_DATABASE_TIMEOUT


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin, so
        # the "begin" hook below can choose IMMEDIATE for writers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # A 200 means the change is on the disk: in WAL mode only FULL syncs
        # the log at every commit; NORMAL lets a power cut or kernel crash
        # take the last acknowledged saves (docs/security.md, "Failures").
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **{**sqlite.engine_options(url), **kwargs})
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_recycle", 1800)
    return create_async_engine(url, **kwargs)


class Database:
    """Owns the engine; hands out read and write sessions."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT, **engine_kwargs: Any) -> None:
        self.url = url
        # A database that stops answering (a frozen host, a dead network path)
        # leaves queries hanging with the socket still open; without a deadline
        # every request would hang with it instead of answering 503.
        self.timeout = timeout
        self.engine = create_engine(url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self._read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._write = async_sessionmaker(
            self.engine.execution_options(sqlite_immediate=True), expire_on_commit=False
        )

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        try:
            async with asyncio.timeout(self.timeout), self._read() as session:
                yield session
        except TimeoutError as exc:
            raise _too_slow() from exc
        except (OperationalError, DBAPIError) as exc:
            if _is_unavailable(exc):
                raise Unavailable("the database is not reachable right now") from exc
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
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends without error."""
        try:
            async with asyncio.timeout(self.timeout), self._write() as session, session.begin():
                yield session
        except TimeoutError as exc:
            # The commit's outcome is unknown: the caller answers 503, and a
            # retry with the same Idempotency-Key finds out which it was.
            raise _too_slow() from exc
        except (OperationalError, DBAPIError) as exc:
            if _is_unavailable(exc):
                raise Unavailable("the database is not reachable right now") from exc
            raise

    async def ping(self) -> None:
        async with asyncio.timeout(self.timeout), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.engine.dispose()


def _too_slow() -> Unavailable:
    return Unavailable("the database did not answer in time", retry_after=2)


def _is_unavailable(exc: DBAPIError) -> bool:
    """Connection-level failures, as opposed to a bad statement or constraint."""
    if exc.connection_invalidated:
        return True
    message = str(exc.orig).lower() if exc.orig is not None else str(exc).lower()
    hints = (
        "connection",
        "could not connect",
        "server closed",
        "gone away",
        "lost connection",
        "database is locked",
        "timeout",
        "refused",
        "shutting down",
        "terminating",
    )
    return any(hint in message for hint in hints)
