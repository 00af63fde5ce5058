"""``WARRANTYSYNC_LOG_FORMAT=json`` and request ids, on a real server process.

Mixed traffic, including an unhandled error provoked through the database (a
row whose date the app cannot read), then every line the process wrote must
be one JSON object with an ISO 8601 UTC timestamp in milliseconds, the error
logged once, with the request id the client got as ``X-Request-Id``.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LiveFactory
from factories import PASSWORD
from warrantysync.logs import JsonFormatter, TextFormatter, utc_timestamp
from warrantysync.web.requestid import accept_request_id

TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
GENERATED = re.compile(r"[0-9a-f]{32}")


def corrupt_purchase_date(db: Path, case_id: int) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE warranty_cases SET purchase_date = 'not a date' WHERE id = ?", (case_id,)
        )


def records(log: str) -> list[dict[str, Any]]:
    lines = log.splitlines()
    assert lines
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
    return parsed


def test_json_logs_cover_every_line_and_tie_the_error_to_its_request(
    live_factory: LiveFactory, tmp_path: Path
) -> None:
    server, world = live_factory(log_format="json", trusted_proxies="127.0.0.1")
    branch, phone, laptop = (
        world.branches["downtown"],
        world.cases["phone"],
        world.cases["laptop"],
    )
    with httpx.Client(base_url=server.url, timeout=10) as http:
        login = http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200
        http.headers["X-CSRF-Token"] = login.json()["csrf_token"]
        seen: list[httpx.Response] = [
            login,
            http.get("/api/me"),
            http.get(f"/api/branches/{branch}/cases"),
            http.patch(f"/api/cases/{phone}", json={"changes": {"notes": "logged"}}),
            http.patch(f"/api/cases/{phone}", json={"changes": {"status": "nonsense"}}),
            http.get("/api/cases/999999"),
            http.get(f"/branch/{branch}"),
            http.get("/static/css/app.css"),
            http.get("/healthz"),
            http.get("/readyz"),
            http.get("/metrics"),
        ]
        with http.stream("GET", f"/api/branches/{branch}/events?client_id=logs") as stream:
            assert stream.status_code == 200
            seen.append(stream)
            for line in stream.iter_lines():
                if line.startswith("event: ready"):
                    break
        # From a trusted proxy (loopback, set above) a valid incoming id is kept.
        relayed = http.get("/api/me", headers={"X-Request-Id": "lb-7f3a.42"})
        assert relayed.headers["x-request-id"] == "lb-7f3a.42"
        forged = http.get("/api/me", headers={"X-Request-Id": "two words"})
        assert GENERATED.fullmatch(forged.headers["x-request-id"])

        corrupt_purchase_date(tmp_path / "live.db", laptop)
        broken = http.get(f"/api/cases/{laptop}")
        assert broken.status_code == 500
        assert broken.json() == {"error": "internal", "message": "something went wrong"}
    ids = [response.headers["x-request-id"] for response in [*seen, broken]]
    assert all(GENERATED.fullmatch(rid) for rid in ids), ids
    assert len(set(ids)) == len(ids)

    server.signal(signal.SIGTERM)
    server.wait(15)
    entries = records(server.log())
    for entry in entries:
        assert TIME.fullmatch(entry["time"]), entry
        assert {"level", "logger", "message", "pid"} <= set(entry), entry
    loggers = {entry["logger"] for entry in entries}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers, loggers

    errors = [entry for entry in entries if entry["level"] == "error"]
    assert len(errors) == 1, errors
    (error,) = errors
    assert error["request_id"] == broken.headers["x-request-id"]
    assert "date" in error["exception"]
    access = {
        entry.get("request_id"): entry for entry in entries if entry["logger"] == "uvicorn.access"
    }
    for rid in [*ids, "lb-7f3a.42"]:
        assert rid in access, rid
    assert access[broken.headers["x-request-id"]]["status"] == 500
    assert access[broken.headers["x-request-id"]]["path"] == f"/api/cases/{laptop}"


def test_an_incoming_request_id_from_an_untrusted_peer_is_replaced(
    live_factory: LiveFactory,
) -> None:
    server, _world = live_factory(trusted_proxies="10.255.255.1")
    response = httpx.get(f"{server.url}/healthz", headers={"X-Request-Id": "from-anyone"})
    assert response.status_code == 200
    assert GENERATED.fullmatch(response.headers["x-request-id"])


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123", True),
        ("a.b:c_d/e", True),
        ("x" * 128, True),
        ("x" * 129, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ("ümlaut", False),
    ],
)
def test_which_incoming_ids_are_kept(incoming: str, kept: bool) -> None:
    assert (accept_request_id(incoming.encode("utf-8")) is not None) is kept


def test_formatters_use_utc_milliseconds() -> None:
    import logging

    record = logging.LogRecord("warrantysync.x", logging.INFO, __file__, 1, "hi %s", ("you",), None)
    record.created = 1764590400.5  # 2025-12-01T12:00:00.500Z
    assert utc_timestamp(record.created) == "2025-12-01T12:00:00.500Z"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["time"] == "2025-12-01T12:00:00.500Z" and entry["message"] == "hi you"
    assert (
        TextFormatter()
        .format(record)
        .startswith("2025-12-01T12:00:00.500Z INFO warrantysync.x: hi you")
    )


def test_a_refused_start_is_a_json_line_too(tmp_path: Path) -> None:
    """Redis unreachable at start: the one line the process writes is JSON as well."""
    import os
    import subprocess
    import sys

    from servers import free_port

    env = {k: v for k, v in os.environ.items() if not k.startswith("WARRANTYSYNC_")}
    env.update(
        WARRANTYSYNC_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'x.db'}",
        WARRANTYSYNC_SECRET_KEY="k",
        WARRANTYSYNC_REDIS_URL=f"redis://:hunter2@127.0.0.1:{free_port()}/0",
        WARRANTYSYNC_LOG_FORMAT="json",
    )
    done = subprocess.run(
        [sys.executable, "-m", "warrantysync", "serve", "--port", str(free_port())],
        env=env,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stdout == b""
    (entry,) = records(done.stderr.decode())
    assert entry["level"] == "error" and TIME.fullmatch(entry["time"])
    assert "cannot reach Redis" in entry["message"] and "hunter2" not in entry["message"]
