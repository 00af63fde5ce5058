"""A 200 means the change is on stable storage, on every database.

SQLite is set up for it by the app (``synchronous=FULL``, proven against a
crashing disk in ``faults/test_fault_machine_crash.py``). PostgreSQL and
MariaDB are set up by their operators, so the server checks the settings
that decide it on its first connection and logs a warning for each one that
can lose acknowledged commits — against the real servers: the test
servers' fast settings (``fsync``, ``synchronous_commit`` and
``full_page_writes`` off; ``innodb_flush_log_at_trx_commit=0``) are exactly
what must be warned about, and a server with durable settings gets no
warning.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from conftest import LIVE_ENV
from live import LiveServer
from servers import MariaDBServer, PostgresServer
from warrantysync.storage.db import Database
from warrantysync.storage.migrate import upgrade

AT_RISK = "acknowledged saves are at risk"


async def _first_connection_warnings(url: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    db = Database(url, check_durability=True)
    try:
        with caplog.at_level(logging.WARNING, logger="warrantysync.storage.db"):
            for _ in range(2):  # checked once, on the first connection only
                await db.probe()
                db._probe = None  # a second real probe, not the shared result
    finally:
        await db.dispose()
    return [r.getMessage() for r in caplog.records if AT_RISK in r.getMessage()]


async def test_sqlite_commits_with_synchronous_full(db_url: str) -> None:
    db = Database(db_url)
    try:
        async with db.read() as session:
            assert (await session.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await session.execute(text("PRAGMA synchronous"))).scalar() == 2  # FULL
    finally:
        await db.dispose()


@pytest.mark.postgresql
async def test_postgresql_fast_settings_are_warned_about_once_each(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_server.create_database(f"dur_{secrets.token_hex(4)}")
    await asyncio.to_thread(upgrade, url)
    warnings = await _first_connection_warnings(url, caplog)
    assert len(warnings) == 3, warnings
    for setting in ("fsync = off", "synchronous_commit = off", "full_page_writes = off"):
        assert any(setting in w for w in warnings), (setting, warnings)


@pytest.mark.postgresql
async def test_postgresql_synchronous_commit_is_read_as_the_session_sees_it(
    postgres_server: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"dur_{secrets.token_hex(4)}"
    url = postgres_server.create_database(name)
    await asyncio.to_thread(upgrade, url)
    postgres_server.sql(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    warnings = await _first_connection_warnings(url, caplog)
    assert not any("synchronous_commit" in w for w in warnings), warnings
    assert any("fsync = off" in w for w in warnings)  # server-wide, still off


@pytest.mark.postgresql
async def test_postgresql_with_durable_settings_gets_no_warning(
    durable_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = durable_postgres.create_database(f"dur_{secrets.token_hex(4)}")
    await asyncio.to_thread(upgrade, url)
    assert await _first_connection_warnings(url, caplog) == []


@pytest.mark.mysql
async def test_mariadb_flush_setting(
    spare_mariadb: MariaDBServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = spare_mariadb.create_database(f"dur_{secrets.token_hex(4)}")
    await asyncio.to_thread(upgrade, url)
    warnings = await _first_connection_warnings(url, caplog)
    assert len(warnings) == 1 and "innodb_flush_log_at_trx_commit = 0" in warnings[0], warnings
    caplog.clear()
    spare_mariadb.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 1")
    try:
        assert await _first_connection_warnings(url, caplog) == []
    finally:
        spare_mariadb.sql("SET GLOBAL innodb_flush_log_at_trx_commit = 0")


@pytest.mark.postgresql
def test_the_server_logs_the_warning_when_it_first_reaches_the_database(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.create_database(f"dur_{secrets.token_hex(4)}")
    upgrade(url)
    env = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}
    with LiveServer(env=env, log_path=tmp_path / "server.log") as server:
        assert httpx.get(f"{server.url}/readyz", timeout=30).status_code == 200
        log = server.log()
    lines = [line for line in log.splitlines() if AT_RISK in line]
    assert len(lines) == 3, log
    assert any("synchronous_commit = off" in line for line in lines)
