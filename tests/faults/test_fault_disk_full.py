"""The disk under the SQLite database fills up, then space comes back.

The database sits on a small tmpfs. While it is full every save and every
login answers 503 ``unavailable`` with ``Retry-After`` (never 500), each
failure is one log line (no traceback), and ``/readyz`` — which writes —
says unavailable although reads still work. Once space is freed, saves,
logins and ``/readyz`` work again without a restart, and nothing refused
was half-applied.

``warrantysync demo`` on a disk that fills up midway is one transaction:
it fails with a message, leaves the database as empty as it found it, and
runs through once there is room.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LIVE_ENV
from disks import Tmpfs, unavailable
from factories import PASSWORD, seeded
from faultkit import login_cookie
from live import LiveServer
from warrantysync.storage.migrate import upgrade

SAVES = 40


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Tmpfs]:
    reason = unavailable("tmpfs")
    if reason is not None:
        pytest.skip(reason)
    with Tmpfs(tmp_path / "disk", size_kib=8192) as disk:
        yield disk


def test_a_full_disk_answers_503_and_recovers_when_space_returns(
    tmpfs: Tmpfs, migrated_template: Path, tmp_path: Path
) -> None:
    path = tmpfs.mountpoint / "warrantysync.db"
    shutil.copy(migrated_template, path)
    url = f"sqlite+aiosqlite:///{path}"
    world = seeded(url)
    case = world.cases["phone"]
    env = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}
    server = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    try:
        cookie, csrf = login_cookie(server.url, "alice@example.com")
        with httpx.Client(
            base_url=server.url, cookies={"warrantysync_session": cookie}, timeout=30
        ) as http:
            before = http.get(f"/api/cases/{case}").json()
            tmpfs.fill()
            answers = [
                http.patch(
                    f"/api/cases/{case}",
                    json={"changes": {"notes": f"{n} " + "x" * 4000}},
                    headers={"X-CSRF-Token": csrf},
                )
                for n in range(SAVES)
            ]
            statuses = [a.status_code for a in answers]
            assert set(statuses) == {503}, statuses
            for answer in answers:
                assert answer.json()["error"] == "unavailable"
                assert int(answer.headers["retry-after"]) >= 1
            login = httpx.post(
                f"{server.url}/api/auth/login",
                json={"email": "bob@example.com", "password": PASSWORD},
                timeout=30,
            )
            assert login.status_code == 503, login.text
            assert int(login.headers["retry-after"]) >= 1
            ready = http.get("/readyz")
            assert ready.status_code == 503, ready.text
            assert "disk full" in ready.json()["checks"]["database"]
            # Reading needs no space: the case is there, unchanged.
            assert http.get(f"/api/cases/{case}").json() == before

            tmpfs.free()
            freed = time.monotonic()
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < freed + 10, "not ready again after space returned"
                time.sleep(0.1)
            back = time.monotonic() - freed
            saved = http.patch(
                f"/api/cases/{case}",
                json={"changes": {"notes": "room again"}},
                headers={"X-CSRF-Token": csrf},
            )
            assert saved.status_code == 200, saved.text
            assert saved.json()["version"] == before["version"] + 1  # nothing half-applied
            assert login_cookie(server.url, "bob@example.com")
    finally:
        server.stop()
    log = server.log()
    assert "Traceback" not in log, log[-3000:]
    assert " 500 " not in log
    failures = [line for line in log.splitlines() if "database unavailable:" in line]
    assert SAVES + 1 <= len(failures) <= SAVES + 3, failures[:5]  # saves, login, readyz
    print(f"\ndisk full: {SAVES} saves and a login refused; ready {back:.2f}s after space returned")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "warrantysync", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_demo_on_a_filling_disk_is_all_or_nothing(tmpfs: Tmpfs) -> None:
    path = tmpfs.mountpoint / "warrantysync.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    env = {"WARRANTYSYNC_DATABASE_URL": url, "WARRANTYSYNC_SECRET_KEY": "demo-test"}
    # Room for the users and a few cases, not for all 50 cases and their history.
    tmpfs.fill(leave_kib=64)
    failed = _cli(env, "demo")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Traceback" not in failed.stderr, failed.stderr
    assert "disk full" in failed.stderr, failed.stderr

    tmpfs.free()
    listed = _cli(env, "users", "list")
    assert listed.returncode == 0, listed.stderr
    assert "alice@example.com" not in listed.stdout  # the failed run left nothing behind
    loaded = _cli(env, "demo")
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "demo data loaded" in loaded.stdout
    assert "alice@example.com" in _cli(env, "users", "list").stdout
