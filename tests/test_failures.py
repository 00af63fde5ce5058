"""Which database errors are "unavailable" (storage/failures.py), by what they are.

The real outages are in ``faults/test_fault_db_outage.py`` and
``faults/test_fault_disk_full.py``; here the table itself, with the
drivers' own exception classes: every kind of failure of the database maps
to its kind, and a failure of the statement (a constraint, bad SQL) to
none, so it still surfaces as the defect or domain error it is.
"""

from __future__ import annotations

import socket
import sqlite3

import asyncmy.errors
import asyncpg.exceptions
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from warrantysync.storage.failures import Failure, classify, describe


def _sqlite(code: int, message: str = "sqlite says no") -> OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return OperationalError("statement", {}, error)


def _wrapped(orig: BaseException) -> DBAPIError:
    """As SQLAlchemy's asyncpg adapter raises it: the driver error as the cause."""
    adapted = Exception(str(orig))
    adapted.__cause__ = orig
    adapted.sqlstate = getattr(orig, "sqlstate", None)  # type: ignore[attr-defined]
    return DBAPIError("statement", {}, adapted)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), Failure.UNREACHABLE),
        (socket.gaierror(-2, "Name or service not known"), Failure.UNREACHABLE),
        (ConnectionResetError(104, "reset"), Failure.UNREACHABLE),
        (TimeoutError(), Failure.SLOW),
        (PoolTimeout("QueuePool limit reached"), Failure.BUSY),
        (_wrapped(asyncpg.exceptions.InvalidPasswordError("no")), Failure.UNREACHABLE),
        (_wrapped(asyncpg.exceptions.AdminShutdownError("bye")), Failure.UNREACHABLE),
        (_wrapped(asyncpg.exceptions.CannotConnectNowError("starting")), Failure.UNREACHABLE),
        (_wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("gone")), Failure.UNREACHABLE),
        (_wrapped(asyncpg.exceptions.InvalidCatalogNameError("no db")), Failure.UNREACHABLE),
        (_wrapped(asyncpg.exceptions.DiskFullError("full")), Failure.STORAGE),
        (_wrapped(asyncpg.exceptions.TooManyConnectionsError("many")), Failure.BUSY),
        (
            OperationalError("s", {}, asyncmy.errors.OperationalError(2003, "refused")),
            Failure.UNREACHABLE,
        ),
        (
            OperationalError("s", {}, asyncmy.errors.OperationalError(2013, "lost")),
            Failure.UNREACHABLE,
        ),
        (
            OperationalError("s", {}, asyncmy.errors.OperationalError(1045, "denied")),
            Failure.UNREACHABLE,
        ),
        (
            OperationalError("s", {}, asyncmy.errors.OperationalError(1021, "disk full")),
            Failure.STORAGE,
        ),
        (
            OperationalError("s", {}, asyncmy.errors.OperationalError(1040, "too many")),
            Failure.BUSY,
        ),
        (_sqlite(sqlite3.SQLITE_FULL, "database or disk is full"), Failure.STORAGE),
        (_sqlite(sqlite3.SQLITE_IOERR_WRITE, "disk I/O error"), Failure.STORAGE),
        (_sqlite(sqlite3.SQLITE_READONLY, "attempt to write a readonly database"), Failure.STORAGE),
        (_sqlite(sqlite3.SQLITE_BUSY, "database is locked"), Failure.BUSY),
    ],
)
def test_failures_of_the_database_are_unavailable(exc: BaseException, expected: Failure) -> None:
    assert classify(exc) is expected


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("s", {}, sqlite3.IntegrityError("UNIQUE constraint failed")),
        _sqlite(sqlite3.SQLITE_ERROR, "no such table: counters"),
        _wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")),
        _wrapped(asyncpg.exceptions.UndefinedTableError("no table")),
        IntegrityError("s", {}, asyncmy.errors.IntegrityError(1062, "Duplicate entry")),
        OperationalError("s", {}, asyncmy.errors.OperationalError(1054, "Unknown column")),
        ValueError("not a database error at all"),
    ],
)
def test_failures_of_the_statement_are_not(exc: BaseException) -> None:
    assert classify(exc) is None


def test_a_message_alone_decides_nothing() -> None:
    # The old check matched words; a constraint naming a "connection" column is no outage.
    assert (
        classify(IntegrityError("s", {}, sqlite3.IntegrityError("connection_id is NULL"))) is None
    )


def test_the_log_line_names_the_driver_cause() -> None:
    exc = OperationalError("s", {}, asyncmy.errors.OperationalError(2003, "Can't connect"))
    exc.orig.__cause__ = ConnectionRefusedError(111, "Connect call failed")  # type: ignore[union-attr]
    assert describe(exc) == "ConnectionRefusedError: [Errno 111] Connect call failed"
