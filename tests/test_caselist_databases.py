"""The case list on 50,000 cases of one branch, on SQLite, PostgreSQL and MariaDB.

For every kind of list query (docs/protocol.md, "Listing cases") the
database's own ``EXPLAIN`` must show each statement that reads
``warranty_cases`` going through an index (migration 0004), never a scan of
the table; and paging by cursor must give exactly the rows of one big page
under the database's own collation, ties included. The branch is seeded with
plain INSERTs in batches: the import path has tests of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import event, insert, text

from warrantysync.services import caselist
from warrantysync.services.cases import CaseService
from warrantysync.storage.db import Database
from warrantysync.storage.migrate import upgrade
from warrantysync.storage.models import Branch, Membership, Role, User, WarrantyCase, table

pytestmark = pytest.mark.asyncio(loop_scope="module")

DATABASES: list[Any] = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]
CASES = 50_000
OPEN = 1_000  # the newest ones; the rest closed or rejected, as in a branch of years
PRODUCTS = ("iPhone 14", "Dell XPS 13", "Bosch SMS6", "Pixel 7")
FIRST = [f"First{n}" for n in range(37)]
LAST = [f"Last{n}" for n in range(41)]
# Texts of the length people write: the rows are much wider than the indexes.
ISSUE = (
    "The screen cracked after a fall from the kitchen counter; touch still works in the"
    " lower half. The customer wants a quote before any repair and asks about data."
)
NOTES = (
    "Called the customer, left a message. Parts ordered from the distributor, expected"
    " within five working days. Checked the warranty: purchase within two years, receipt"
    " on file. Customer picked up the loan device and signed for it."
)
OPEN_VIEW = [("status", s) for s in caselist.OPEN_STATUSES]
QUERIES: list[list[tuple[str, str]]] = [
    [],
    OPEN_VIEW,
    *([("sort", sort)] for name in caselist.SORTABLE for sort in (name, f"-{name}")),
    *([*OPEN_VIEW, ("sort", sort)] for sort in ("customer_name", "-status", "assignee_id")),
    [("status", "closed")],
    [("status", "closed"), ("status", "rejected")],
    [("assignee", "none")],
    [("assignee", "1")],
    [("q", "555-4242")],
    [("q", "Last17")],
    [("q", "zzz-nothing")],
    [("q", "SN0012"), ("sort", "-customer_email")],
    [*OPEN_VIEW, ("q", "42"), ("sort", "priority")],
    # Terms that nearly every case matches, or too short for trigrams: every
    # row must be tested anyway, and PostgreSQL's cheapest plan for that may
    # be a sequential scan (docs/performance.md).
    [("q", "example.com")],
    [("q", "c1"), ("sort", "customer_name")],
]


def _row(i: int, branch_id: int, assignees: list[int]) -> dict[str, Any]:
    newest = i > CASES - OPEN
    statuses = ("new", "diagnosing", "awaiting_parts", "in_repair", "ready")
    return {
        "branch_id": branch_id,
        "case_number": f"L-{i:07d}",
        "customer_name": f"{FIRST[i % 37]} {LAST[i * 7 % 41]} {i * 7919 % 100_000}",
        "customer_phone": f"(212) 555-{i % 10_000:04d}",
        "customer_email": f"c{i}@example.com",
        "product": PRODUCTS[i % 4],
        "serial_number": f"SN{i * 31 % 99_999_999:08d}",
        "purchase_date": None if i % 5 == 0 else dt.date(2020, 1, 1) + dt.timedelta(i % 1500),
        "issue": f"{ISSUE} {i}",
        "status": statuses[i % 5] if newest else ("rejected" if i % 17 == 0 else "closed"),
        "priority": ("low", "normal", "high")[i % 3],
        "assignee_id": assignees[i % len(assignees)] if i % 4 else None,
        "notes": NOTES if i % 3 else "",
        "version": 1,
        "created_at": dt.datetime(2024, 1, 1),
        "updated_at": dt.datetime(2024, 1, 1),
    }


@pytest.fixture(scope="module", params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    name = f"t_{secrets.token_hex(5)}"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('plans') / 'big.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").create_database(name)
    else:
        url = request.getfixturevalue("mariadb_server").create_database(name)
    upgrade(url)
    return url


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def big(database_url: str) -> AsyncIterator[tuple[Database, int]]:
    db = Database(database_url, timeout=120)
    async with db.write() as session:
        session.add(Branch(id=1, name="Big", timezone="UTC", last_event_id=0))
        users = [User(email=f"u{n}@example.com", name=f"User {n}", password_hash="x") for n in "AB"]
        session.add_all(users)
        await session.flush()
        for user in users:
            session.add(Membership(user_id=user.id, branch_id=1, role=Role.editor))
        ids = [user.id for user in users]
    rows = [_row(i, 1, ids) for i in range(1, CASES + 1)]
    for start in range(0, CASES, 5000):
        async with db.write() as session:
            await session.execute(insert(table(WarrantyCase)), rows[start : start + 5000])
    # PostgreSQL's autovacuum and InnoDB's persistent statistics gather these
    # on their own in production; SQLite has none unless someone runs ANALYZE.
    if db.dialect == "postgresql":
        # VACUUM too: autovacuum keeps the visibility map that index-only scans
        # need. A VACUUM that runs while any transaction of the server is older
        # than the rows (another test's, on the shared server) leaves pages
        # unmarked, and the planner then rightly prefers a scan: repeat it
        # until the map is complete, as autovacuum would.
        async with db.engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            for _ in range(40):
                await autocommit.exec_driver_sql("VACUUM ANALYZE warranty_cases")
                pages, visible = (
                    await autocommit.exec_driver_sql(
                        "SELECT relpages, relallvisible FROM pg_class"
                        " WHERE relname = 'warranty_cases'"
                    )
                ).one()
                if visible >= pages:
                    break
                await asyncio.sleep(0.5)
    elif db.dialect != "sqlite":
        async with db.write() as session:
            await session.execute(text("ANALYZE TABLE warranty_cases"))
    try:
        yield db, ids[0]
    finally:
        await db.dispose()


def _params(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {}
    for name, value in pairs:
        params.setdefault(name, []).append(value)
    return params


def _uses_index(dialect: str, plan: Any) -> list[str]:
    """What in ``plan`` reads warranty_cases without an index (empty: nothing)."""
    if dialect == "sqlite":
        lines = [row[3] for row in plan]
        return [line for line in lines if line.startswith("SCAN warranty_cases")]
    if dialect == "postgresql":
        bad: list[str] = []

        def walk(node: dict[str, Any]) -> None:
            if node.get("Relation Name") == "warranty_cases" and node["Node Type"] == "Seq Scan":
                bad.append(json.dumps(node)[:300])
            for child in node.get("Plans", []):
                walk(child)

        walk(plan[0][0][0]["Plan"])
        return bad
    # MySQL/MariaDB: one row per table access; type ALL is a full table scan.
    rows = [dict(row._mapping) for row in plan]
    return [
        str(row)
        for row in rows
        if row.get("table") == "warranty_cases" and (row.get("type") == "ALL" or not row.get("key"))
    ]


async def _explain(db: Database, statement: str, parameters: Any) -> Any:
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN (FORMAT JSON) "}
    async with db.read() as session:
        connection = await session.connection()
        result = await connection.exec_driver_sql(
            prefix.get(db.dialect, "EXPLAIN ") + statement, parameters
        )
        return result.all()


@pytest.mark.parametrize(
    "pairs", QUERIES, ids=lambda p: "&".join(f"{k}={v}" for k, v in p) or "all"
)
async def test_every_list_query_reads_through_an_index(
    big: tuple[Database, int], pairs: list[tuple[str, str]]
) -> None:
    db, user = big
    cases = CaseService(db, publish=None, replay_window=10_000)  # type: ignore[arg-type]
    query = caselist.parse(_params(pairs), user_id=user)
    seen: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "warranty_cases" in statement:
            seen.append((statement, parameters))

    engine = db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        page, _head = await cases.page(branch_id=1, query=query)
        if page.next_cursor is not None:  # the second page too: the keyset statements
            pairs2 = [*pairs, ("cursor", page.next_cursor)]
            await cases.page(branch_id=1, query=caselist.parse(_params(pairs2), user_id=user))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert seen
    q = query.q
    dense = q in ("example.com", "c1")
    for statement, parameters in seen:
        plan = await _explain(db, statement, parameters)
        if dense and db.dialect == "postgresql":
            continue
        assert not _uses_index(db.dialect, plan), (statement, plan)


@pytest.mark.parametrize("sort", [s for n in caselist.SORTABLE for s in (n, f"-{n}")])
async def test_pages_are_one_big_page_cut_up_under_the_databases_collation(
    big: tuple[Database, int], sort: str
) -> None:
    db, user = big
    cases = CaseService(db, publish=None, replay_window=10_000)  # type: ignore[arg-type]
    view = [*OPEN_VIEW[:2], ("sort", sort)]  # new and diagnosing: about 400 cases
    whole, _ = await cases.page(
        branch_id=1, query=caselist.parse(_params([*view, ("limit", "500")]), user_id=user)
    )
    assert whole.next_cursor is None and len(whole.cases) == whole.total > 300
    walked: list[int] = []
    cursor: str | None = None
    while True:
        pairs = [*view, ("limit", "37"), *([("cursor", cursor)] if cursor else [])]
        page, _ = await cases.page(branch_id=1, query=caselist.parse(_params(pairs), user_id=user))
        walked += [c["id"] for c in page.cases]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert walked == [c["id"] for c in whole.cases]


async def test_a_case_with_every_field_at_its_longest_fits_the_indexes(
    big: tuple[Database, int],
) -> None:
    """The widest entry of the search index, in 4-byte characters, is still taken."""
    db, user = big
    wide = "😀"
    async with db.write() as session:
        await session.execute(
            insert(table(WarrantyCase)),
            [
                {
                    **_row(CASES + 1, 1, [user]),
                    "case_number": "L-WIDE",
                    "customer_name": wide * 120,
                    "customer_phone": wide * 40,
                    "customer_email": wide * 254,
                    "product": wide * 120,
                    "serial_number": wide * 80,
                }
            ],
        )
    cases = CaseService(db, publish=None, replay_window=10_000)  # type: ignore[arg-type]
    page, _ = await cases.page(
        branch_id=1,
        query=caselist.parse({"q": [wide * 3], "sort": ["customer_name"]}, user_id=user),
    )
    assert [c["case_number"] for c in page.cases] == ["L-WIDE"]
