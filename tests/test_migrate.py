"""``warrantysync db upgrade``: says what it did, and two at once is safe.

Two upgrades started together on a fresh database (two nodes deploying at
the same moment) both succeed: the second waits on a lock held in the
database (PostgreSQL advisory lock, MariaDB ``GET_LOCK``, SQLite's write
lock), then finds nothing left to do — real processes, real servers.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from servers import MariaDBServer, PostgresServer
from warrantysync.storage.migrate import downgrade

HEAD = "0004"


def _upgrade_process(url: str) -> subprocess.Popen[str]:
    env = {**os.environ, "WARRANTYSYNC_DATABASE_URL": url, "WARRANTYSYNC_SECRET_KEY": "x"}
    return subprocess.Popen(
        [sys.executable, "-m", "warrantysync", "db", "upgrade"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _upgrade(url: str) -> str:
    process = _upgrade_process(url)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    return out.strip()


def _fresh(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    name = f"mig_{secrets.token_hex(4)}"
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    server: PostgresServer | MariaDBServer = request.getfixturevalue(
        "postgres_server" if kind == "postgresql" else "mariadb_server"
    )
    return server.create_database(name)


KINDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.mark.parametrize("kind", KINDS)
def test_two_upgrades_at_once_on_a_fresh_database(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = _fresh(kind, request, tmp_path)
    processes = [_upgrade_process(url) for _ in range(2)]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, out + err
        assert "Traceback" not in err, err
        outputs.append(out.strip())
    assert sorted(outputs) == sorted(
        [f"upgraded from an empty database to {HEAD}", f"already up to date ({HEAD})"]
    ), outputs


def test_an_upgrade_waits_out_a_long_write_lock_on_a_new_sqlite_file(tmp_path: Path) -> None:
    """Even the connection's own first statements (switching a new file to WAL needs
    the write lock) wait for another process's lock, not only the migrations."""
    path = tmp_path / "fresh.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other (id INTEGER)")  # the file exists, in rollback mode
    holder.execute("BEGIN IMMEDIATE")
    try:
        process = _upgrade_process(f"sqlite+aiosqlite:///{path}")
        # Longer than sqlite3's default 5 s timeout and the server's 10 s busy timeout.
        time.sleep(11)
        assert process.poll() is None, process.communicate()
    finally:
        holder.rollback()
        holder.close()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, out + err
    assert out.strip() == f"upgraded from an empty database to {HEAD}"


def test_upgrade_says_what_it_did(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    assert _upgrade(url) == f"upgraded from an empty database to {HEAD}"
    assert _upgrade(url) == f"already up to date ({HEAD})"
    downgrade(url, "0001")
    assert _upgrade(url) == f"upgraded from 0001 to {HEAD}"


def test_an_unreachable_database_is_a_message_not_a_traceback() -> None:
    process = _upgrade_process("postgresql+asyncpg://postgres@db.invalid:5432/none")
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 1
    assert "Traceback" not in err, err
    assert "not reachable" in err, err
