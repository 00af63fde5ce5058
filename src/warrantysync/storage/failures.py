"""Which database failures mean "the database is unavailable", and which kind.

One classification for every session (``Database.read``, ``write``,
``snapshot`` and the readiness probe), so every endpoint answers the same
503 ``unavailable`` with ``Retry-After`` whatever went wrong underneath: a
refused or reset connection, a host name that does not resolve, refused
credentials, a server shutting down or restarting mid-transaction, a full
disk, an I/O error, a busy SQLite file, an exhausted pool. Anything else —
a constraint, a bad statement — is a defect or a domain error and is left
alone.

Failures are recognised by what they are, never by their message: the
exception type (``OSError`` and its kin from the socket layer), the SQLSTATE
class (PostgreSQL, and MySQL where it sets one), the MySQL/MariaDB error
number, and SQLite's primary result code.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from enum import Enum

from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..errors import Unavailable


class Failure(Enum):
    """A kind of unavailability; the value is the message a client reads."""

    UNREACHABLE = "the database is not reachable right now"
    STORAGE = "the database cannot store data right now (disk full or I/O error)"
    BUSY = "the database is busy right now"
    SLOW = "the database did not answer in time"


# SQLSTATE classes: 08 connection exception, 28 invalid authorization,
# 53 insufficient resources (disk full, out of memory, too many connections),
# 57 operator intervention (shutdown, crash recovery, statement timeout),
# 58 system error (I/O error). 3D000: the database does not exist (yet).
_SQLSTATE_CLASSES = {
    "08": Failure.UNREACHABLE,
    "28": Failure.UNREACHABLE,
    "53": Failure.STORAGE,
    "57": Failure.UNREACHABLE,
    "58": Failure.STORAGE,
}
_SQLSTATES = {"3D000": Failure.UNREACHABLE, "53300": Failure.BUSY}

# MySQL/MariaDB server error numbers; 2000-2999 are all client-side
# connection errors (CR_*: refused, unknown host, gone away, lost).
_MYSQL_ERRORS = {
    1021: Failure.STORAGE,  # ER_DISK_FULL
    1030: Failure.STORAGE,  # ER_GET_ERRNO: the storage engine failed (e.g. ENOSPC)
    1040: Failure.BUSY,  # ER_CON_COUNT_ERROR: too many connections
    1044: Failure.UNREACHABLE,  # ER_DBACCESS_DENIED_ERROR
    1045: Failure.UNREACHABLE,  # ER_ACCESS_DENIED_ERROR
    1049: Failure.UNREACHABLE,  # ER_BAD_DB_ERROR
    1053: Failure.UNREACHABLE,  # ER_SERVER_SHUTDOWN
    1114: Failure.STORAGE,  # ER_RECORD_FILE_FULL
    1152: Failure.UNREACHABLE,  # ER_ABORTING_CONNECTION
    1158: Failure.UNREACHABLE,  # ER_NET_READ_ERROR
    1159: Failure.UNREACHABLE,  # ER_NET_READ_INTERRUPTED
    1160: Failure.UNREACHABLE,  # ER_NET_ERROR_ON_WRITE
    1161: Failure.UNREACHABLE,  # ER_NET_WRITE_INTERRUPTED
    1290: Failure.STORAGE,  # ER_OPTION_PREVENTS_STATEMENT: --read-only (a failover)
    1836: Failure.STORAGE,  # ER_READ_ONLY_MODE
    1927: Failure.UNREACHABLE,  # ER_CONNECTION_KILLED (MariaDB)
    4031: Failure.UNREACHABLE,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
}
_MYSQL_DRIVERS = ("asyncmy", "pymysql", "MySQLdb", "aiomysql")

# SQLite primary result codes (the low byte of the extended code).
_SQLITE_CODES = {
    sqlite3.SQLITE_BUSY: Failure.BUSY,
    sqlite3.SQLITE_LOCKED: Failure.BUSY,
    sqlite3.SQLITE_READONLY: Failure.STORAGE,  # e.g. the filesystem went read-only
    sqlite3.SQLITE_IOERR: Failure.STORAGE,
    sqlite3.SQLITE_FULL: Failure.STORAGE,
    sqlite3.SQLITE_CANTOPEN: Failure.STORAGE,
    sqlite3.SQLITE_PROTOCOL: Failure.BUSY,
}


class SharedFailure(Exception):
    """This request's change was in a transaction shared with others that failed.

    Raised by ``storage/groupcommit.py`` in every writer of a failed batch,
    from the failure itself (so ``describe`` names it); ``failure`` is the kind
    each of them answers.
    """

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


def classify(exc: BaseException) -> Failure | None:
    """The kind of unavailability ``exc`` is, or None when it is not one."""
    if isinstance(exc, SharedFailure):
        return exc.failure
    if isinstance(exc, TimeoutError):
        return Failure.SLOW
    if isinstance(exc, PoolTimeout):
        return Failure.BUSY  # every pooled connection is in use
    if isinstance(exc, DisconnectionError):
        return Failure.UNREACHABLE
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return Failure.UNREACHABLE
    for cause in _causes(exc):
        found = _classify_one(cause)
        if found is not None:
            return found
    return None


def _classify_one(exc: BaseException) -> Failure | None:
    if isinstance(exc, TimeoutError):
        return Failure.SLOW  # a driver's own connect or command timeout
    if isinstance(exc, OSError):
        # ConnectionRefusedError, ConnectionResetError, socket.gaierror (DNS),
        # EHOSTUNREACH...: the socket never got to the database.
        return Failure.UNREACHABLE
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and isinstance(code, int):
        return _SQLITE_CODES.get(code & 0xFF)
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        found = _SQLSTATES.get(sqlstate) or _SQLSTATE_CLASSES.get(sqlstate[:2])
        if found is not None:
            return found
    if type(exc).__module__.split(".")[0] in _MYSQL_DRIVERS:
        number = exc.args[0] if exc.args else None
        if isinstance(number, int):
            if 2000 <= number < 3000:
                return Failure.UNREACHABLE
            return _MYSQL_ERRORS.get(number)
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, the driver error SQLAlchemy wraps, and what each was raised from."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo and len(seen) < 16:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            todo.append(orig)
        if current.__cause__ is not None:
            todo.append(current.__cause__)


def unavailable(failure: Failure) -> Unavailable:
    return Unavailable(failure.value, retry_after=2)


def describe(exc: BaseException) -> str:
    """One line naming the driver-level cause, for the log."""
    causes = list(_causes(exc))
    root = causes[-1]
    text = " ".join(str(root).split())[:200]
    return f"{type(root).__name__}: {text}" if text else type(root).__name__
