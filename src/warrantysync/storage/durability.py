"""Warnings for database settings that can lose acknowledged commits in a crash.

A 200 means the change is on stable storage (docs/security.md, "Failures").
For SQLite the app sees to that itself (``synchronous=FULL``); PostgreSQL and
MySQL/MariaDB are configured by their operators, so the server reads the
settings that decide it on its first connection and logs one warning for
each that lets a crash of the database host take back commits it had
already confirmed (docs/operations.md, "Durability").
"""

from __future__ import annotations

from typing import Any

# setting: (the value that breaks the promise, what it does)
POSTGRESQL = {
    "fsync": ("off", "writes are never flushed to disk, a crash can lose or corrupt anything"),
    "synchronous_commit": (
        "off",
        "commits are confirmed before they reach the disk, a crash loses the latest",
    ),
    "full_page_writes": ("off", "a crash can leave torn pages that recovery cannot repair"),
}
MYSQL_FLUSH = "innodb_flush_log_at_trx_commit"


def problems(dialect: str, dbapi_connection: Any) -> list[str]:
    """One sentence per setting that can lose acknowledged commits (none: [])."""
    cursor = dbapi_connection.cursor()
    try:
        if dialect == "postgresql":
            names = ", ".join(f"'{name}'" for name in POSTGRESQL)
            cursor.execute(f"SELECT name, setting FROM pg_settings WHERE name IN ({names})")
            return [
                f"PostgreSQL {name} = {value}: {POSTGRESQL[name][1]}; set it to on"
                for name, value in cursor.fetchall()
                if value == POSTGRESQL[name][0]
            ]
        if dialect in ("mysql", "mariadb"):
            cursor.execute(f"SELECT @@GLOBAL.{MYSQL_FLUSH}")
            value = str(cursor.fetchone()[0])
            if value != "1":
                return [
                    f"MySQL/MariaDB {MYSQL_FLUSH} = {value}: commits are confirmed before"
                    " the log reaches the disk, a crash loses the latest; set it to 1"
                ]
        return []
    finally:
        cursor.close()
