"""The API and the migrations on every supported database: SQLite, PostgreSQL, MariaDB.

Each test gets a fresh database (``create_database``) migrated by
``warrantysync.storage.migrate.upgrade``, as ``warrantysync db upgrade``
would do it. Run one database only with its marker, e.g.
``pytest -m postgresql tests/test_databases.py`` (SQLite has no marker:
``-m "not postgresql and not mysql"``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from conftest import login, make_settings
from factories import World, seed_world
from warrantysync import create_app
from warrantysync.storage.db import Database
from warrantysync.storage.migrate import downgrade, upgrade
from warrantysync.storage.models import AuditEntry, OutboxEvent

DATABASES: list[Any] = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated database of the requested kind (sync: alembic runs its own loop)."""
    name = f"t_{secrets.token_hex(5)}"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").create_database(name)
    else:
        url = request.getfixturevalue("mariadb_server").create_database(name)
    upgrade(url)
    yield url


@pytest.fixture
async def seeded(database_url: str) -> World:
    db = Database(database_url)
    try:
        return await seed_world(db)
    finally:
        await db.dispose()


@pytest.fixture
async def apps(
    database_url: str, seeded: World
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two app instances on one database, each with its own engine, as two processes."""
    clients: list[httpx.AsyncClient] = []
    contexts = []
    for _ in range(2):
        app = create_app(make_settings(database_url))
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        clients.append(httpx.AsyncClient(transport=transport, base_url="http://testserver"))
    yield clients[0], clients[1]
    for client in clients:
        await client.aclose()
    for context in contexts:
        await context.__aexit__(None, None, None)


async def test_the_api_round_trip(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient], seeded: World
) -> None:
    alice, dave = apps
    alice_h = await login(alice, "alice@example.com")
    dave_h = await login(dave, "dave@example.com")
    branch = seeded.branches["downtown"]

    listing = await alice.get(f"/api/branches/{branch}/cases")
    assert listing.status_code == 200
    assert [c["customer_name"] for c in listing.json()["cases"]] == ["John Smith", "Mia Wong"]
    etag = listing.headers["etag"]
    cached = await alice.get(f"/api/branches/{branch}/cases", headers={"If-None-Match": etag})
    assert cached.status_code == 304

    created = await alice.post(
        f"/api/branches/{branch}/cases",
        json={
            "customer_name": "Zoë Ægir 🛠",  # 4-byte UTF-8 needs utf8mb4 on MySQL
            "purchase_date": "2024-02-29",
            "priority": "urgent",
            "notes": "x" * 5000,
        },
        headers=alice_h,
    )
    assert created.status_code == 201, created.text
    case = created.json()
    assert case["case_number"] == "WC-000004"
    assert case["version"] == 1
    fetched = (await dave.get(f"/api/cases/{case['id']}")).json()
    # What was answered is what was stored, microseconds of the timestamps included
    # (MySQL's plain DATETIME would have dropped them).
    assert fetched == case

    url = f"/api/cases/{case['id']}"
    stale = await alice.patch(
        url,
        json={"changes": {"status": "diagnosing"}, "expected": {"status": "ready"}},
        headers=alice_h,
    )
    assert stale.status_code == 409
    assert stale.json()["error"] == "conflict"
    assert stale.json()["current"] == {"status": "new"}

    body = {"changes": {"status": "diagnosing"}, "expected": {"status": "new"}}
    headers = {**alice_h, "Idempotency-Key": "k-1", "X-Client-Id": "tab-1"}
    first = await alice.patch(url, json=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 2
    again = await alice.patch(url, json=body, headers=headers)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    reused = await alice.patch(
        url, json={"changes": {"status": "ready"}}, headers={**alice_h, "Idempotency-Key": "k-1"}
    )
    assert reused.status_code == 422

    history = (await dave.get(f"{url}/history")).json()
    assert [(h["field"], h["old"], h["new"], h["version"]) for h in history][:1] == [
        ("status", "new", "diagnosing", 2)
    ]
    assert {h["field"] for h in history if h["version"] == 1} >= {"customer_name", "notes"}

    after = (await alice.get(f"/api/branches/{branch}/cases")).json()
    assert int(after["last_event_id"]) == int(listing.json()["last_event_id"]) + 2

    assert (await alice.delete(url, headers=alice_h)).status_code == 403
    assert (await dave.delete(url, headers=dave_h)).status_code == 204
    assert (await alice.get(url)).status_code == 404


async def test_concurrent_patches_from_two_instances_never_lose_a_version(
    apps: tuple[httpx.AsyncClient, httpx.AsyncClient], seeded: World, database_url: str
) -> None:
    one, two = apps
    headers = [await login(one, "alice@example.com"), await login(two, "bob@example.com")]
    case = seeded.cases["phone"]
    branch = seeded.branches["downtown"]
    db = Database(database_url)
    try:
        async with db.read() as session:
            head_before = await session.scalar(
                text("SELECT last_event_id FROM branches WHERE id = :b"), {"b": branch}
            )
        n = 24

        async def patch(i: int) -> httpx.Response:
            client = (one, two)[i % 2]
            return await client.patch(
                f"/api/cases/{case}",
                json={"changes": {"notes": f"note {i}"}},
                headers=headers[i % 2],
            )

        answers = await asyncio.gather(*(patch(i) for i in range(n)))
        assert [a.status_code for a in answers] == [200] * n, [a.text for a in answers]
        assert sorted(a.json()["version"] for a in answers) == list(range(2, n + 2))

        async with db.read() as session:
            versions = (
                await session.scalars(
                    select(AuditEntry.version)
                    .where(AuditEntry.case_id == case, AuditEntry.field == "notes")
                    .order_by(AuditEntry.id)
                )
            ).all()
            events = (
                await session.scalars(
                    select(OutboxEvent.id)
                    .where(OutboxEvent.branch_id == branch)
                    .order_by(OutboxEvent.id)
                )
            ).all()
        # Each version once, committed in order; every commit its own event id.
        assert list(versions) == list(range(2, n + 2))
        new_events = [e for e in events if e > int(head_before or 0)]
        assert new_events == list(range(int(head_before or 0) + 1, int(head_before or 0) + n + 1))
        final = (await one.get(f"/api/cases/{case}")).json()
        assert final["version"] == n + 1
        # The last committed version's value is the one stored: no lost update.
        last = next(a.json() for a in answers if a.json()["version"] == n + 1)
        assert final["notes"] == last["notes"]
    finally:
        await db.dispose()


async def test_a_snapshot_sees_one_point_in_time(database_url: str, seeded: World) -> None:
    """``GET …/cases`` pairs the cases with ``last_event_id``: a commit in between must not show."""
    db = Database(database_url)
    branch = seeded.branches["downtown"]
    query = text("SELECT last_event_id FROM branches WHERE id = :b")
    try:
        async with db.snapshot() as session:
            before = await session.scalar(query, {"b": branch})
            async with db.write() as other:
                await other.execute(
                    text("UPDATE branches SET last_event_id = last_event_id + 1 WHERE id = :b"),
                    {"b": branch},
                )
            assert await session.scalar(query, {"b": branch}) == before
        async with db.read() as session:
            assert await session.scalar(query, {"b": branch}) == before + 1
    finally:
        await db.dispose()


def test_migrations_go_down_and_up_again(database_url: str) -> None:
    downgrade(database_url, "base")
    upgrade(database_url)
