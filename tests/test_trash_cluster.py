"""Several nodes racing to purge the trash: only one purges, no case is purged twice.

First two purge jobs on one database in one process, each with an engine of
its own (as two nodes have), on every supported database; then two real
``warrantysync serve`` processes on PostgreSQL and Redis whose purge rounds
run every 0.3 s, watched through their own ``/metrics``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from cluster import Cluster, cluster, on, user
from factories import make_case, seed_world
from servers import PostgresServer, RedisServer
from warrantysync.services.trash import Trash
from warrantysync.storage.db import Database
from warrantysync.storage.migrate import upgrade
from warrantysync.storage.models import AuditEntry, WarrantyCase, utcnow

RETENTION_DAYS = 30
LONG_AGO = dt.timedelta(days=RETENTION_DAYS + 1)
DATABASES: list[Any] = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    name = f"trash_{secrets.token_hex(4)}"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'trash.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").create_database(name)
    else:
        url = request.getfixturevalue("mariadb_server").create_database(name)
    upgrade(url)
    yield url


@pytest.fixture
async def two_engines(database_url: str) -> AsyncIterator[tuple[Database, Database]]:
    first, second = Database(database_url), Database(database_url)
    try:
        yield first, second
    finally:
        await first.dispose()
        await second.dispose()


async def trashed_long_ago(db: Database, count: int) -> list[int]:
    """``count`` cases of a fresh world, deleted more than the retention ago."""
    world = await seed_world(db)
    branch, by = world.branches["downtown"], world.users["dave"]
    ids = [await make_case(db, branch_id=branch, by=by) for _ in range(count)]
    async with db.write() as session:
        await session.execute(
            update(WarrantyCase)
            .where(WarrantyCase.id.in_(ids))
            .values(deleted_at=utcnow() - LONG_AGO)
        )
    return ids


async def left_of(db: Database, ids: list[int]) -> tuple[int, int]:
    """(case rows, audit rows) still there for ``ids``."""
    async with db.read() as session:
        cases = await session.scalar(
            select(func.count()).select_from(WarrantyCase).where(WarrantyCase.id.in_(ids))
        )
        audit = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.case_id.in_(ids))
        )
    return int(cases or 0), int(audit or 0)


async def test_two_nodes_racing_for_the_lease_one_purges(
    two_engines: tuple[Database, Database],
) -> None:
    first_db, second_db = two_engines
    ids = await trashed_long_ago(first_db, 12)
    nodes = [
        Trash(db, retention_days=RETENTION_DAYS, purge_interval=60, holder=f"node-{n}")
        for n, db in enumerate(two_engines)
    ]
    results = await asyncio.gather(*(node.purge_if_leader() for node in nodes))
    assert sorted(results, key=lambda r: r is None) == [12, None], results
    assert await left_of(second_db, ids) == (0, 0)


async def test_two_purges_at_once_remove_and_count_each_case_once(
    two_engines: tuple[Database, Database],
) -> None:
    """Without the lease (a node that outlived it): the deletes themselves are idempotent."""
    first_db, second_db = two_engines
    ids = await trashed_long_ago(first_db, 30)
    nodes = [Trash(db, retention_days=RETENTION_DAYS, purge_interval=60) for db in two_engines]
    results = await asyncio.gather(*(node.purge() for node in nodes))
    assert sum(results) == 30, results
    assert await left_of(second_db, ids) == (0, 0)


# --- two real server processes -------------------------------------------------


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of the Prometheus text ``text`` (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(wanted) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture
def purging_nodes(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    with cluster(
        postgres_server, redis_server, tmp_path, redis_db=7, trash_purge_interval="0.3"
    ) as nodes:
        nodes.start()
        nodes.start()
        yield nodes


@pytest.mark.cluster
@pytest.mark.redis
@pytest.mark.postgresql
async def test_two_server_processes_purge_each_case_once(purging_nodes: Cluster) -> None:
    a, b = purging_nodes.nodes
    world = purging_nodes.world
    branch = world.branches["downtown"]
    async with user(a, "dave@example.com") as (dave, headers), on(dave, b) as dave_on_b:
        ids = []
        for n in range(20):
            made = await dave.post(
                f"/api/branches/{branch}/cases", json={"customer_name": f"C{n}"}, headers=headers
            )
            assert made.status_code == 201, made.text
            ids.append(made.json()["id"])
            gone = await dave_on_b.delete(f"/api/cases/{ids[-1]}", headers=headers)
            assert gone.status_code == 204, gone.text
        # Both nodes have had rounds meanwhile: nothing is old enough yet.
        await asyncio.sleep(1.0)
        assert (await dave.get(f"/api/branches/{branch}/trash")).json()["total"] == 20

        db = Database(purging_nodes.database_url)
        try:
            async with db.write() as session:
                await session.execute(
                    update(WarrantyCase)
                    .where(WarrantyCase.id.in_(ids))
                    .values(deleted_at=utcnow() - LONG_AGO)
                )
            deadline = time.monotonic() + 30
            while (await left_of(db, ids)) != (0, 0):
                assert time.monotonic() < deadline, "the trash was not purged within 30 s"
                await asyncio.sleep(0.2)
            await asyncio.sleep(1.0)  # more rounds on both nodes: still nothing counted twice
        finally:
            await db.dispose()
        trash = (await dave_on_b.get(f"/api/branches/{branch}/trash")).json()
        assert trash == {"cases": [], "total": 0, "retention_days": RETENTION_DAYS}
        # The seeded cases were never deleted: they are all still there.
        snapshot = (await dave.get(f"/api/branches/{branch}/cases")).json()
        assert {world.cases["phone"], world.cases["laptop"]} <= {c["id"] for c in snapshot["cases"]}

    scrapes = []
    for node in (a, b):
        async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
            scrapes.append((await http.get("/metrics")).text)
    purged = [metric(text, "warrantysync_cases_purged_total") for text in scrapes]
    assert sum(purged) == 20, purged
    skipped = [
        metric(text, "warrantysync_trash_purges_total", outcome="skipped") for text in scrapes
    ]
    ran = [metric(text, "warrantysync_trash_purges_total", outcome="ran") for text in scrapes]
    # Rounds of both nodes met: one held the lease, the other stood aside.
    assert sum(skipped) > 0 and sum(ran) > 0, (ran, skipped)
    for node in (a, b):
        assert "Traceback" not in node.log(), node.log()
