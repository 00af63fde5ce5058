"""``/metrics`` under ``warrantysync serve --workers 2``: one scrape counts the whole server.

Every request below goes over a new connection, and which worker accepts it
is the kernel's choice (the JSON log's ``pid`` says which did). Saves go on
until both workers have saved; after each, several scrapes (each answered by
either worker) must all report the same totals, which never go down; the
open streams are summed over the live workers. A worker killed with SIGKILL
leaves its counts in the totals and takes its streams out of the gauge.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import LIVE_ENV, login, seeded_sqlite
from factories import PASSWORD, World
from live import EventReader, LiveServer
from servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

MIN_SAVES = 6
MAX_SAVES = 60
SCRAPES_PER_SAVE = 3
STREAMS = 4
UPDATED = '{kind="case-updated"}'


def sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{labels} missing from:\n{text}"
    return float(found.group(1))


def worker_pids(text: str) -> set[int]:
    found = re.findall(r'^warrantysync_asyncio_tasks\{pid="(\d+)"\}', text, re.MULTILINE)
    return {int(pid) for pid in found}


def answered_by(log: str, path_part: str) -> dict[int, int]:
    """Worker pid → requests it answered whose path contains ``path_part`` (access lines)."""
    counts: dict[int, int] = {}
    for entry in map(json.loads, log.splitlines()):
        if entry["logger"] == "uvicorn.access" and path_part in entry["path"]:
            counts[entry["pid"]] = counts.get(entry["pid"], 0) + 1
    return counts


@pytest.fixture
def two_workers(
    tmp_path: Path, migrated_template: Path, redis_server: RedisServer
) -> Iterator[tuple[LiveServer, World]]:
    url, world = seeded_sqlite(tmp_path, migrated_template)
    env = {
        **LIVE_ENV,
        "WARRANTYSYNC_DATABASE_URL": url,
        "WARRANTYSYNC_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/7",
        "WARRANTYSYNC_LOG_FORMAT": "json",
    }
    server = LiveServer(env=env, log_path=tmp_path / "workers.log", workers=2)
    try:
        yield server.start(timeout=40), world
    finally:
        server.kill()


def test_one_scrape_reports_every_worker(two_workers: tuple[LiveServer, World]) -> None:
    server, world = two_workers
    case, branch = world.cases["phone"], world.branches["downtown"]
    fresh = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, timeout=15, limits=fresh) as http:
        answer = http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert answer.status_code == 200
        http.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
        streams = [
            http.stream("GET", f"/api/branches/{branch}/events?client_id=w{n}")
            for n in range(STREAMS)
        ]
        opened = [stream.__enter__() for stream in streams]
        try:
            # Kept: closing a line iterator would close its stream.
            readers = [response.iter_lines() for response in opened]
            for response, lines in zip(opened, readers, strict=True):
                assert response.status_code == 200
                for line in lines:
                    if line.startswith("event: ready"):
                        break
            totals: list[tuple[float, float]] = []
            for n in range(1, MAX_SAVES + 1):
                saved = http.patch(f"/api/cases/{case}", json={"changes": {"notes": str(n)}})
                assert saved.status_code == 200, saved.text
                for _ in range(SCRAPES_PER_SAVE):
                    text = http.get("/metrics").text
                    published = sample(text, "warrantysync_events_published_total", UPDATED)
                    saves = sample(text, "warrantysync_save_latency_seconds_count")
                    assert sample(text, "warrantysync_streams_open") == STREAMS, text
                    totals.append((published, saves))
                    assert (published, saves) == (n, n), totals
                if n >= MIN_SAVES and len(answered_by(server.log(), f"/api/cases/{case}")) == 2:
                    break
        finally:
            for stream in streams:
                stream.__exit__(None, None, None)
    # Both workers saved, so whichever answered a scrape counted the other's saves too.
    assert len(answered_by(server.log(), f"/api/cases/{case}")) == 2


async def test_a_worker_that_dies_leaves_its_counts_and_takes_its_streams(
    two_workers: tuple[LiveServer, World],
) -> None:
    server, world = two_workers
    case, branch = world.cases["phone"], world.branches["downtown"]
    fresh = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.url, timeout=15, limits=fresh) as http:
        http.headers.update(await login(http, "alice@example.com"))
        readers = [
            await EventReader(http, f"/api/branches/{branch}/events?client_id=d{n}").start()
            for n in range(8)
        ]
        try:
            for reader in readers:
                await reader.next("ready")
            for n in range(3):
                saved = await http.patch(f"/api/cases/{case}", json={"changes": {"notes": str(n)}})
                assert saved.status_code == 200
            before = (await http.get("/metrics")).text
            assert sample(before, "warrantysync_streams_open") == 8
            served = answered_by(server.log(), "/events")
            assert sum(served.values()) == 8 and set(served) <= worker_pids(before), served
            victim = max(served, key=lambda pid: served[pid])
            os.kill(victim, signal.SIGKILL)

            async def replaced() -> str:
                while True:
                    text = (await http.get("/metrics")).text
                    pids = worker_pids(text)
                    if victim not in pids and len(pids) == 2:
                        return text
                    await asyncio.sleep(0.2)

            after = await asyncio.wait_for(replaced(), 30)
            assert sample(after, "warrantysync_events_published_total", UPDATED) == 3
            assert sample(after, "warrantysync_streams_open") == 8 - served[victim], after
        finally:
            for reader in readers:
                await reader.close()
