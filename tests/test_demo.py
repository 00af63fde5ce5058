"""demo.py: the data `warrantysync demo` loads."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from sqlalchemy import func, select

from servers import MariaDBServer, PostgresServer
from warrantysync.demo import load_demo
from warrantysync.services import admin
from warrantysync.services.accounts import Accounts
from warrantysync.services.cases import CaseService
from warrantysync.storage import outbox
from warrantysync.storage.db import Database
from warrantysync.storage.migrate import upgrade
from warrantysync.storage.models import (
    AuditEntry,
    Branch,
    Membership,
    OutboxEvent,
    Role,
    User,
    WarrantyCase,
)

SECRET = "test-secret-key"
EXPECTED_ROLES = {
    ("alice@example.com", 1): Role.editor,
    ("alice@example.com", 2): Role.editor,
    ("bob@example.com", 1): Role.editor,
    ("bob@example.com", 2): Role.editor,
    ("carol@example.com", 1): Role.viewer,
    ("dave@example.com", 1): Role.manager,
}


@dataclass(frozen=True)
class DemoTemplate:
    path: Path
    logins: list[tuple[str, str, str]] | None


@pytest.fixture(scope="module")
def demo_template(
    migrated_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> DemoTemplate:
    """One demo load per module (it takes seconds), copied into each test that reads it."""
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    shutil.copy(migrated_template, path)

    async def load() -> list[tuple[str, str, str]] | None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        try:
            return await load_demo(db)
        finally:
            await db.dispose()

    return DemoTemplate(path, asyncio.run(load()))


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """An empty, migrated database."""
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def demo_db(demo_template: DemoTemplate, tmp_path: Path) -> AsyncIterator[Database]:
    """A database the demo has been loaded into."""
    target = tmp_path / "demo.db"
    shutil.copy(demo_template.path, target)
    database = Database(f"sqlite+aiosqlite:///{target}")
    try:
        yield database
    finally:
        await database.dispose()


async def _ignore(_event: object) -> None:
    return None


async def _count(db: Database, model: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_demo_creates_branches_users_and_cases(
    demo_template: DemoTemplate, demo_db: Database
) -> None:
    db = demo_db
    assert demo_template.logins == [
        ("alice@example.com", "demo", "editor of Downtown, Airport"),
        ("bob@example.com", "demo", "editor of Downtown, Airport"),
        ("carol@example.com", "demo", "viewer of Downtown"),
        ("dave@example.com", "demo", "manager of Downtown"),
    ]
    async with db.read() as session:
        branches = (await session.scalars(select(Branch).order_by(Branch.id))).all()
        users = {u.email: u for u in await session.scalars(select(User))}
        roles = {
            (email, branch_id): role
            for email, branch_id, role in (
                await session.execute(
                    select(User.email, Membership.branch_id, Membership.role).join(
                        Membership, Membership.user_id == User.id
                    )
                )
            ).all()
        }
    assert [(b.id, b.name, b.timezone) for b in branches] == [
        (1, "Downtown", "America/New_York"),
        (2, "Airport", "America/Chicago"),
    ]
    assert {email: u.name for email, u in users.items()} == {
        "alice@example.com": "Alice Johnson",
        "bob@example.com": "Bob Smith",
        "carol@example.com": "Carol Diaz",
        "dave@example.com": "Dave Kim",
    }
    assert all(u.is_active for u in users.values())
    assert roles == EXPECTED_ROLES

    accounts = Accounts(db, session_ttl=3600, secret_key=SECRET)
    for email in users:
        assert (await accounts.check_password(email=email, password="demo")).email == email


async def test_demo_cases_are_plausible_and_made_through_the_case_service(
    demo_db: Database,
) -> None:
    db = demo_db
    cases = CaseService(db, publish=_ignore, replay_window=10000)
    numbers: list[str] = []
    for branch_id in (1, 2):
        snapshot, head = await cases.snapshot(branch_id=branch_id)
        assert len(snapshot) == 25
        accounts = Accounts(db, session_ttl=1, secret_key=SECRET)
        members = {m["id"] for m in await accounts.members(branch_id=branch_id)}
        today = dt.datetime.now(dt.UTC).date()
        for case in snapshot:
            numbers.append(case["case_number"])
            assert case["customer_name"] and case["product"] and case["serial_number"]
            assert case["issue"] and case["customer_phone"].startswith("(")
            assert case["assignee_id"] is None or case["assignee_id"] in members
            bought = dt.date.fromisoformat(case["purchase_date"])
            assert today - dt.timedelta(days=732) <= bought < today
            # version 1 at creation, +1 per workflow step, each step audited
            history = await cases.history(case_id=case["id"], limit=500, before=None)
            assert max(h["version"] for h in history) == case["version"]
        # every event is in the outbox, numbered 1..head without a gap
        async with db.read() as session:
            ids = list(
                await session.scalars(
                    select(OutboxEvent.id)
                    .where(OutboxEvent.branch_id == branch_id)
                    .order_by(OutboxEvent.id)
                )
            )
            assert head == await outbox.head(session, branch_id=branch_id)
        assert ids == list(range(1, head + 1))
        assert head == sum(c["version"] for c in snapshot)  # one event per version
        statuses = {c["status"] for c in snapshot}
        assert len(statuses) >= 4, statuses
        assert len({c["priority"] for c in snapshot}) >= 3
        assert any(c["assignee_id"] for c in snapshot)
        assert any(c["version"] > 1 for c in snapshot)
    assert sorted(numbers) == [f"WC-{n:06d}" for n in range(1, 51)]
    assert await _count(db, AuditEntry) > 50 * 5


async def test_demo_runs_only_once(demo_db: Database) -> None:
    db = demo_db
    counts = [await _count(db, m) for m in (User, Branch, WarrantyCase, OutboxEvent)]

    assert await load_demo(db) is None
    assert [await _count(db, m) for m in (User, Branch, WarrantyCase, OutboxEvent)] == counts


async def test_demo_leaves_a_database_with_data_alone(db: Database) -> None:
    await admin.create_branch(db, name="Existing")
    assert await load_demo(db) is None
    assert await _count(db, User) == 0
    assert await _count(db, WarrantyCase) == 0


async def _case_fingerprint(db: Database) -> list[tuple[Any, ...]]:
    async with db.read() as session:
        rows = await session.execute(
            select(
                WarrantyCase.case_number,
                WarrantyCase.customer_name,
                WarrantyCase.product,
                WarrantyCase.serial_number,
                WarrantyCase.status,
                WarrantyCase.priority,
                WarrantyCase.assignee_id,
            ).order_by(WarrantyCase.id)
        )
        return [tuple(row) for row in rows]


async def test_demo_is_deterministic(db: Database, demo_db: Database) -> None:
    assert await load_demo(db) is not None
    assert await _case_fingerprint(db) == await _case_fingerprint(demo_db)


async def _demo_then_new_branch(url: str) -> None:
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(url)
    try:
        assert await load_demo(db) is not None
        # Explicit ids 1 and 2 must not leave the id sequence behind.
        branch = await admin.create_branch(db, name="Harbour")
        assert branch.id == 3
        assert await _count(db, WarrantyCase) == 50
    finally:
        await db.dispose()


@pytest.mark.postgresql
async def test_demo_on_postgresql(postgres_server: PostgresServer) -> None:
    await _demo_then_new_branch(postgres_server.create_database("demo_sequences"))


@pytest.mark.mysql
async def test_demo_on_mariadb(mariadb_server: MariaDBServer) -> None:
    await _demo_then_new_branch(mariadb_server.create_database("demo_sequences"))
