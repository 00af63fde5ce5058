"""The machine crashes right after saves were acknowledged (SQLite on ext4).

The database sits on an ext4 filesystem on a loop device. Five saves answer
200; then the filesystem aborts its journal (``Ext4Disk.crash()``: what a
power cut or kernel crash leaves on the disk is what had reached it), the
server is SIGKILLed, the disk is checked with ``e2fsck`` and mounted again,
and a new server opens the same file: every acknowledged save must be
there, because a 200 means the change is on stable storage. Between the
fault and the kill, the filesystem error answers 503, never 500.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LIVE_ENV
from disks import Ext4Disk, unavailable
from factories import World, seeded
from faultkit import login_cookie
from live import LiveServer

SAVES = 5


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Ext4Disk]:
    reason = unavailable("ext4")
    if reason is not None:
        pytest.skip(reason)
    with Ext4Disk(tmp_path) as mounted:
        yield mounted


def _database_on(disk: Ext4Disk, template: Path) -> tuple[str, World]:
    path = disk.mountpoint / "warrantysync.db"
    shutil.copy(template, path)
    url = f"sqlite+aiosqlite:///{path}"
    world = seeded(url)
    os.sync()  # the starting state is on the disk; only what follows is at risk
    return url, world


def _server(url: str, log: Path) -> LiveServer:
    return LiveServer(env={**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}, log_path=log).start()


def test_acknowledged_saves_survive_a_crash_of_the_machine(
    disk: Ext4Disk, migrated_template: Path, tmp_path: Path
) -> None:
    url, world = _database_on(disk, migrated_template)
    case = world.cases["phone"]
    server = _server(url, tmp_path / "before.log")
    try:
        cookie, csrf = login_cookie(server.url, "alice@example.com")
        acknowledged: list[dict[str, object]] = []
        with httpx.Client(
            base_url=server.url, cookies={"warrantysync_session": cookie}, timeout=30
        ) as http:
            for n in range(SAVES):
                response = http.patch(
                    f"/api/cases/{case}",
                    json={"changes": {"notes": f"acknowledged {n}"}},
                    headers={"X-CSRF-Token": csrf},
                )
                assert response.status_code == 200, response.text
                acknowledged.append(response.json())
            disk.crash()
            # Until the machine goes down, the filesystem error is a 503, never a 500.
            refused = http.patch(
                f"/api/cases/{case}",
                json={"changes": {"notes": "after the fault"}},
                headers={"X-CSRF-Token": csrf},
            )
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"] == "unavailable"
            assert int(refused.headers["retry-after"]) >= 1
            assert http.get("/readyz").status_code == 503
    finally:
        server.kill()
    assert "Traceback" not in server.log(), server.log()[-3000:]
    report = disk.recover()

    after = _server(url, tmp_path / "after.log")
    try:
        cookie, _csrf = login_cookie(after.url, "alice@example.com")
        with httpx.Client(
            base_url=after.url, cookies={"warrantysync_session": cookie}, timeout=30
        ) as http:
            current = http.get(f"/api/cases/{case}").json()
            history = http.get(f"/api/cases/{case}/history").json()
    finally:
        after.stop()
    last = acknowledged[-1]
    assert (current["notes"], current["version"]) == (last["notes"], last["version"]), report
    saved = [h["new"] for h in reversed(history) if h["field"] == "notes"]
    assert saved[-SAVES:] == [f"acknowledged {n}" for n in range(SAVES)]
