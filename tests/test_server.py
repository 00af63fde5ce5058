"""server.py: uvicorn with a goodbye to open streams on SIGTERM.

The signal hook is checked directly, then end to end: a real `warrantysync
serve` process (one worker, and two workers behind Redis) gets SIGTERM while
a stream is open; the stream must receive `goodbye` and the process must exit
promptly instead of sitting out uvicorn's graceful-shutdown timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import sys
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from servers import RedisServer, free_port
from warrantysync import server as server_module
from warrantysync.services import admin
from warrantysync.storage.db import Database


async def _app(scope: Any, receive: Any, send: Any) -> None:  # a do-nothing ASGI app
    return None


async def test_first_exit_signal_asks_the_app_to_say_goodbye(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[object] = []
    monkeypatch.setattr(server_module, "_begin_shutdown", calls.append)
    server = server_module.Server(uvicorn.Config(_app), app=_app)
    server._loop = asyncio.get_running_loop()

    server.handle_exit(signal.SIGTERM, None)
    assert server.should_exit
    assert calls == []  # not inside the signal handler: scheduled on the loop
    await asyncio.sleep(0)
    assert calls == [_app]

    server.handle_exit(signal.SIGINT, None)  # a second signal forces the exit
    await asyncio.sleep(0)
    assert server.force_exit and calls == [_app]


def test_workers_zero_is_refused() -> None:
    from click import ClickException

    from warrantysync.config import Settings

    settings = Settings(secret_key="k", redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(ClickException, match="at least 1"):
        server_module.run(settings, "127.0.0.1", 0, workers=0)
    with pytest.raises(ClickException, match="--reload"):
        server_module.run(settings, "127.0.0.1", 0, workers=2, reload=True)


# -- a real server process -----------------------------------------------------------


@pytest.fixture
def seeded_url(db_url: str) -> str:
    async def seed() -> None:
        db = Database(db_url)
        try:
            branch = await admin.create_branch(db, name="Downtown")
            await admin.create_user(
                db, email="sue@example.com", name="Sue", password="pw-sue-secret"
            )
            await admin.add_member(db, email="sue@example.com", branch_id=branch.id, role="editor")
        finally:
            await db.dispose()

    asyncio.run(seed())
    return db_url


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    log = Path(env["LOG_PATH"])
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WARRANTYSYNC_")}
    full_env.update(env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "warrantysync", "serve", "--port", str(port), *args],
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield proc, base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _goodbye_on_sigterm(proc: subprocess.Popen[bytes], base: str, log: Path) -> None:
    with httpx.Client(base_url=base, timeout=10) as http:
        login = http.post(
            "/api/auth/login", json={"email": "sue@example.com", "password": "pw-sue-secret"}
        )
        assert login.status_code == 200, login.text
        events: list[str] = []
        with http.stream(
            "GET",
            "/api/branches/1/events",
            params={"client_id": "tab-1"},
            headers={"Accept": "text/event-stream"},
        ) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            for line in lines:
                if line.startswith("event: "):
                    events.append(line[7:])
                if events and events[-1] == "ready":
                    break
            signalled = time.monotonic()
            os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(httpx.HTTPError):
                for line in lines:
                    if line.startswith("event: "):
                        events.append(line[7:])
    assert "goodbye" in events, (events, log.read_text())
    proc.wait(timeout=15)
    # uvicorn re-raises the signal it caught once it has shut down cleanly, so a
    # clean stop shows as "killed by SIGTERM" (which systemd counts as success).
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()
    # The stream closed after goodbye, so shutdown did not wait out the
    # graceful timeout (SHUTDOWN_GRACE 5 + 2 s).
    assert time.monotonic() - signalled < 6, log.read_text()


def _env(db_url: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "WARRANTYSYNC_DATABASE_URL": db_url,
        "WARRANTYSYNC_SECRET_KEY": "test-secret-key",
        "WARRANTYSYNC_SHUTDOWN_GRACE": "5",
        "WARRANTYSYNC_RATE_LIMIT_LOGIN": "off",
        "LOG_PATH": str(tmp_path / "server.log"),
        **extra,
    }


def test_sigterm_says_goodbye_and_exits(seeded_url: str, tmp_path: Path) -> None:
    env = _env(seeded_url, tmp_path)
    with serving(env) as (proc, base):
        _goodbye_on_sigterm(proc, base, Path(env["LOG_PATH"]))


@pytest.mark.redis
@pytest.mark.cluster
def test_sigterm_says_goodbye_with_several_workers(
    seeded_url: str, tmp_path: Path, redis_server: RedisServer
) -> None:
    env = _env(seeded_url, tmp_path, WARRANTYSYNC_REDIS_URL=redis_server.url)
    with serving(env, "--workers", "2") as (proc, base):
        _goodbye_on_sigterm(proc, base, Path(env["LOG_PATH"]))


def test_the_startup_heap_is_frozen_after_its_garbage_is_collected() -> None:
    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle only the collector can free
    gone = weakref.ref(a)
    del a, b
    try:
        frozen = server_module.freeze_startup_heap()
        assert gone() is None, "garbage was frozen instead of collected"
        # Frozen objects may still be freed meanwhile (other threads of the test
        # process drop theirs), never added to: the count only falls.
        assert 1000 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
