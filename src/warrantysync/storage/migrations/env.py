"""Alembic environment: runs migrations over the app's async engine.

Online runs hold a lock in the database while they read the schema version
and migrate, so two ``warrantysync db upgrade`` started at once (two nodes
deploying together) run one after the other: the second finds nothing left
to do instead of failing on a table the first has just created. The lock is
a session-level advisory lock on PostgreSQL, ``GET_LOCK`` on MySQL/MariaDB,
and on SQLite the file's write lock, held by running every migration in one
``BEGIN IMMEDIATE`` transaction. ``config.attributes["outcome"]`` tells the
caller the versions before and after (``storage/migrate.py``).
"""

from __future__ import annotations

import asyncio
import sys

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from warrantysync.storage.db import create_engine
from warrantysync.storage.models import Base

config = context.config
target_metadata = Base.metadata

LOCK_NAME = "warrantysync-migrations"
PG_LOCK_KEY = 0x7753_6D69_6772_6174  # "wsmigrat": one app-wide advisory lock id
LOCK_WAIT = 600  # seconds; an upgrade that takes longer than this is stuck
WAITING = "waiting for another `warrantysync db upgrade` to finish..."


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    migration = context.get_context()
    before = migration.get_current_heads()
    with context.begin_transaction():
        context.run_migrations()
    config.attributes["outcome"] = (before, migration.get_current_heads())


def _lock(connection: Connection) -> None:
    """Take the migration lock; waits while another upgrade holds it."""
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # The write lock (storage/db.py's "begin" hook), held until the
        # commit after the last migration: alembic runs them all inside it.
        connection.execution_options(sqlite_immediate=True).exec_driver_sql("SELECT 1")
        return
    if dialect == "postgresql":
        if not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": PG_LOCK_KEY}):
            print(WAITING, file=sys.stderr, flush=True)
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
    elif dialect in ("mysql", "mariadb"):
        got = connection.scalar(text("SELECT GET_LOCK(:name, 0)"), {"name": LOCK_NAME})
        if got != 1:
            print(WAITING, file=sys.stderr, flush=True)
            got = connection.scalar(
                text("SELECT GET_LOCK(:name, :wait)"), {"name": LOCK_NAME, "wait": LOCK_WAIT}
            )
            if got != 1:
                raise RuntimeError(f"another upgrade held the migration lock for {LOCK_WAIT} s")
    # Session-level locks outlive the commit; the migrations start afresh, so
    # they read the version the previous holder left.
    connection.commit()


def _unlock(connection: Connection) -> None:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
    elif dialect in ("mysql", "mariadb"):
        connection.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
    connection.commit()


async def _run_async() -> None:
    # On SQLite every statement of the run, from the connection's own
    # PRAGMAs on, waits up to LOCK_WAIT for another upgrade's lock.
    engine = create_engine(
        config.get_main_option("sqlalchemy.url") or "", busy_timeout_ms=LOCK_WAIT * 1000
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_lock)
            try:
                await connection.run_sync(_run)
                await connection.commit()
            finally:
                # After the commit: the next holder must see this run's work.
                await connection.run_sync(_unlock)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())
