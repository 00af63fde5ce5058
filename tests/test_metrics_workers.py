"""``/metrics`` under ``warrantysync serve --workers 2``: one scrape counts the whole server.

Every request below goes over a new connection, so the kernel hands them to
both workers (the JSON log's ``pid`` proves it). After each save, several
scrapes (each landing on either worker) must all report the same totals,
which never go down; the open streams are summed over the live workers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from conftest import LIVE_ENV, seeded_sqlite
from factories import PASSWORD
from live import LiveServer
from servers import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.cluster]

SAVES = 12
SCRAPES_PER_SAVE = 3
STREAMS = 4


def sample(text: str, name: str, labels: str = "") -> float:
    found = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert found, f"{name}{labels} missing from:\n{text}"
    return float(found.group(1))


def fresh() -> httpx.Client:
    """A client that opens a new connection for every request."""
    return httpx.Client(timeout=15, limits=httpx.Limits(max_keepalive_connections=0))


def test_one_scrape_reports_every_worker(
    tmp_path: Path, migrated_template: Path, redis_server: RedisServer
) -> None:
    url, world = seeded_sqlite(tmp_path, migrated_template)
    env = {
        **LIVE_ENV,
        "WARRANTYSYNC_DATABASE_URL": url,
        "WARRANTYSYNC_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/7",
        "WARRANTYSYNC_LOG_FORMAT": "json",
    }
    server = LiveServer(env=env, log_path=tmp_path / "workers.log", workers=2).start(timeout=40)
    case, branch = world.cases["phone"], world.branches["downtown"]
    base = server.url
    try:
        with fresh() as http:
            login = http.post(
                f"{base}/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
            )
            assert login.status_code == 200
            http.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            streams = [
                http.stream("GET", f"{base}/api/branches/{branch}/events?client_id=w{n}")
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
                for n in range(1, SAVES + 1):
                    saved = http.patch(
                        f"{base}/api/cases/{case}", json={"changes": {"notes": str(n)}}
                    )
                    assert saved.status_code == 200, saved.text
                    for _ in range(SCRAPES_PER_SAVE):
                        text = http.get(f"{base}/metrics").text
                        published = sample(
                            text, "warrantysync_events_published_total", '{kind="case-updated"}'
                        )
                        saves = sample(text, "warrantysync_save_latency_seconds_count")
                        assert sample(text, "warrantysync_streams_open") == STREAMS, text
                        totals.append((published, saves))
                        assert (published, saves) == (n, n), totals
            finally:
                for stream in streams:
                    stream.__exit__(None, None, None)
    finally:
        server.stop()
    pids = {}
    for line in server.log().splitlines():
        entry = json.loads(line)
        if entry["logger"] == "uvicorn.access":
            pids.setdefault(entry["path"].split("?")[0], set()).add(entry["pid"])
    assert len(pids["/metrics"]) == 2, pids
    assert len(pids[f"/api/cases/{case}"] | pids["/metrics"]) == 2, pids
