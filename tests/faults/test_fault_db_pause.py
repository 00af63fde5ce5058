"""The database stops answering during saves (PostgreSQL frozen with SIGSTOP).

While it is frozen every save answers 503 with ``Retry-After`` within a few
seconds — never 200, since nothing can have been committed that the server
could see — and once it resumes, each queued edit retried with its own
``Idempotency-Key`` is applied exactly once: the audit history holds each
value once, in order, and the versions grow by exactly one per edit.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster import seeded_postgres
from conftest import LIVE_ENV
from factories import World
from faultkit import login_cookie, scale
from live import LiveServer
from servers import PostgresServer

pytestmark = pytest.mark.postgresql
DB_TIMEOUT = 2.0


@pytest.fixture
def on_postgres(
    postgres_server: PostgresServer, tmp_path: Path
) -> Iterator[tuple[LiveServer, World]]:
    url, world = seeded_postgres(postgres_server, f"pause_{os.getpid()}_{time.monotonic_ns()}")
    env = {
        **LIVE_ENV,
        "WARRANTYSYNC_DATABASE_URL": url,
        "WARRANTYSYNC_DATABASE_TIMEOUT": str(DB_TIMEOUT),
    }
    server = LiveServer(env=env, log_path=tmp_path / "server.log").start()
    try:
        yield server, world
    finally:
        postgres_server.resume()
        server.kill()


async def test_saves_answer_503_while_the_database_is_frozen_then_apply_once(
    on_postgres: tuple[LiveServer, World], postgres_server: PostgresServer
) -> None:
    server, world = on_postgres
    case = world.cases["phone"]
    cookie, csrf = login_cookie(server.url, "alice@example.com")
    edits = scale(3, 10)
    async with httpx.AsyncClient(
        base_url=server.url, cookies={"warrantysync_session": cookie}, timeout=60
    ) as http:

        async def save(n: int, expected: str) -> httpx.Response:
            return await http.patch(
                f"/api/cases/{case}",
                json={"changes": {"notes": f"edit {n}"}, "expected": {"notes": expected}},
                headers={"X-CSRF-Token": csrf, "X-Client-Id": "tab", "Idempotency-Key": f"k{n}"},
            )

        first = await http.get(f"/api/cases/{case}")
        start_version, current = first.json()["version"], first.json()["notes"]

        postgres_server.pause()
        refused: list[float] = []
        try:
            for n in range(edits):
                started = time.monotonic()
                response = await save(n, current if n == 0 else f"edit {n - 1}")
                took = time.monotonic() - started
                assert response.status_code == 503, response.text
                assert int(response.headers["retry-after"]) >= 1
                assert response.json()["error"] == "unavailable"
                refused.append(took)
            ready = await http.get("/readyz")
            assert ready.status_code == 503
        finally:
            postgres_server.resume()
        # Answered quickly, not hanging: the deadline, plus as much again for
        # giving up the frozen connection, plus slack for a loaded machine.
        assert max(refused) <= 2 * DB_TIMEOUT + 2.0, refused

        # The client retries its queue in order with the same keys; twice, as a
        # browser might after a flaky reconnect.
        answers: list[dict[str, Any]] = []
        for _round in range(2):
            for n in range(edits):
                for _attempt in range(20):
                    response = await save(n, current if n == 0 else f"edit {n - 1}")
                    if response.status_code != 503:
                        break
                    await asyncio.sleep(0.5)
                assert response.status_code == 200, response.text
                answers.append(response.json())
        assert [a["version"] for a in answers[:edits]] == [
            start_version + 1 + n for n in range(edits)
        ]
        assert answers[edits:] == answers[:edits]  # the repeats changed nothing

        final = (await http.get(f"/api/cases/{case}")).json()
        assert final["version"] == start_version + edits
        assert final["notes"] == f"edit {edits - 1}"
        history = (await http.get(f"/api/cases/{case}/history")).json()
        notes = [h for h in reversed(history) if h["field"] == "notes" and "edit" in str(h["new"])]
        assert [h["new"] for h in notes] == [f"edit {n}" for n in range(edits)]
        assert [h["version"] for h in notes] == [start_version + 1 + n for n in range(edits)]
    print(
        f"\ndatabase frozen: {edits} saves refused in {min(refused):.2f}-{max(refused):.2f}s"
        f" (DATABASE_TIMEOUT={DB_TIMEOUT:g}); each applied once after resume"
    )
