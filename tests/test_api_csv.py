"""Cases as CSV through the ASGI app: export, import, and the way back.

docs/protocol.md, "CSV": the export streams the filtered list with a header
row, safe to open in a spreadsheet; the import creates a file's cases all or
nothing, like creates through the API (history, outbox), with a report of
every bad row.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from conftest import login, make_settings
from factories import World, add_member, make_case
from warrantysync import create_app
from warrantysync.casefields import COLUMNS, EDITABLE
from warrantysync.container import Services
from warrantysync.services import csvio
from warrantysync.storage import outbox
from warrantysync.storage.models import OutboxEvent, Role

EDITABLE_NAMES = [spec.name for spec in EDITABLE]
CSV = {"Content-Type": "text/csv"}
# Texts a spreadsheet would run as formulas, and texts near them that it would not.
RISKY = [
    '=HYPERLINK("http://evil.example","Click")',
    "+49 30 1234567",
    "-2+3",
    "@SUM(A1:A9)",
    "\tTabbed",
    "'=already quoted",
    "''two quotes",
    "'plain quote",
    "'",
    "a=b",
]


@pytest.fixture
async def users(app_services: tuple[Any, Services], world: World) -> AsyncIterator[dict[str, Any]]:
    """Logged-in clients: dave manages both branches, alice edits both, carol views downtown."""
    services = app_services[1]
    await add_member(
        services.db,
        user_id=world.users["dave"],
        branch_id=world.branches["airport"],
        role=Role.manager,
    )
    clients: dict[str, Any] = {}
    transport = httpx.ASGITransport(app=app_services[0])
    for who in ("dave", "alice", "carol"):
        client = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        client.headers.update(await login(client, f"{who}@example.com"))
        clients[who] = client
    yield clients
    for client in clients.values():
        await client.aclose()


def rows_of(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text, newline="")))


async def listing(http: httpx.AsyncClient, branch_id: int, **params: Any) -> dict[str, Any]:
    answer = await http.get(f"/api/branches/{branch_id}/cases", params={"limit": 500, **params})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def head(services: Services, branch_id: int) -> int:
    async with services.db.read() as session:
        return await outbox.head(session, branch_id=branch_id)


async def varied_cases(services: Services, world: World) -> None:
    """Downtown gets cases with every kind of value a CSV must carry."""
    by = world.users["dave"]
    downtown = world.branches["downtown"]
    for n, name in enumerate(RISKY):
        await make_case(
            services.db,
            branch_id=downtown,
            by=by,
            customer_name=f"{name} {n}" if name.strip() not in ("'",) else name,
            customer_phone=RISKY[(n + 1) % len(RISKY)][:40],
            product='Dishwasher, 60 cm "SMS6"',
            notes=f"line one\nline two, with a comma\r\nand 'quotes' \"too\" — ünïcödé {n}",
            issue=name,  # kept verbatim: the tab too
            purchase_date=None if n % 2 else "2024-02-29",
            status=["new", "closed", "rejected", "in_repair"][n % 4],
            priority=["low", "urgent"][n % 2],
            assignee_id=world.users["alice"] if n % 3 else None,
        )


# -- export -----------------------------------------------------------------------------


async def test_the_export_is_the_filtered_list_with_a_header(
    users: dict[str, Any], services: Services, world: World
) -> None:
    await varied_cases(services, world)
    downtown = world.branches["downtown"]
    carol = users["carol"]  # a viewer may export what she may read
    params = {"status": ["new", "in_repair"], "sort": "customer_name"}
    answer = await carol.get(f"/api/branches/{downtown}/cases.csv", params=params)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"].startswith('attachment; filename="downtown-cases-')
    assert answer.headers["cache-control"] == "no-store"
    text = answer.content.decode("utf-8")
    assert text.splitlines()[0] == ",".join(COLUMNS)
    assert "\r\n" in text
    exported = rows_of(text)
    listed = (await listing(carol, downtown, **params))["cases"]
    assert [int(row["id"]) for row in exported] == [case["id"] for case in listed]
    for row, case in zip(exported, listed, strict=True):
        for name in COLUMNS:
            value = case[name]
            expected = "" if value is None else str(value)
            assert csvio.unescape(row[name]) == expected, (name, row[name], value)


async def test_no_cell_can_run_as_a_formula(
    users: dict[str, Any], services: Services, world: World
) -> None:
    await varied_cases(services, world)
    downtown = world.branches["downtown"]
    text = (await users["dave"].get(f"/api/branches/{downtown}/cases.csv")).content.decode()
    cells = [cell for row in csv.reader(io.StringIO(text, newline="")) for cell in row]
    assert cells, text
    for cell in cells:
        assert not cell or cell[0] not in "=+-@\t\r", cell
    exported = {row["customer_name"] for row in rows_of(text)}
    assert '\'=HYPERLINK("http://evil.example","Click") 0' in exported
    assert "'+49 30 1234567 1" in exported
    assert "''=already quoted 5" in exported  # so that reading it back takes one ' away
    assert "'plain quote 7" in exported and "'" in exported  # left alone


async def test_bad_export_parameters_are_422(users: dict[str, Any], world: World) -> None:
    url = f"/api/branches/{world.branches['downtown']}/cases.csv"
    for params, field in [
        ({"limit": "10"}, "limit"),
        ({"cursor": "x"}, "cursor"),
        ({"sort": "notes"}, "sort"),
        ({"status": "open"}, "status"),
    ]:
        answer = await users["dave"].get(url, params=params)
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
    assert (await users["dave"].get("/api/branches/999/cases.csv")).status_code == 404


async def test_an_export_spans_many_reads_and_keeps_every_case_once(
    users: dict[str, Any], services: Services, world: World
) -> None:
    airport = world.branches["airport"]
    lines = ["customer_name,priority"] + [f"Bulk {n:04d},high" for n in range(2500)]
    imported = await users["dave"].post(
        f"/api/branches/{airport}/cases/import", content="\n".join(lines).encode(), headers=CSV
    )
    assert imported.status_code == 200, imported.text
    text = (await users["dave"].get(f"/api/branches/{airport}/cases.csv")).content.decode()
    ids = [int(row["id"]) for row in rows_of(text)]
    assert len(ids) == len(set(ids)) == 2501  # the seed's one case, and the import's
    assert ids == sorted(ids, reverse=True)  # newest first, as the list


# -- import -----------------------------------------------------------------------------


async def test_export_then_import_into_another_branch_gives_the_same_cases(
    users: dict[str, Any], services: Services, world: World
) -> None:
    await varied_cases(services, world)
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    dave = users["dave"]
    exported = await dave.get(f"/api/branches/{downtown}/cases.csv", params={"sort": "case_number"})
    before = await head(services, airport)
    answer = await dave.post(
        f"/api/branches/{airport}/cases/import", content=exported.content, headers=CSV
    )
    assert answer.status_code == 200, answer.text
    source = (await listing(dave, downtown, sort="case_number"))["cases"]
    report = answer.json()
    assert report["rows"] == report["imported"] == len(source) and report["dry_run"] is False
    copies = (await listing(dave, airport, sort="case_number"))["cases"][-len(source) :]
    assert [{k: c[k] for k in EDITABLE_NAMES} for c in copies] == [
        {k: c[k] for k in EDITABLE_NAMES} for c in source
    ]
    assert report["case_numbers"] == [copies[0]["case_number"], copies[-1]["case_number"]]
    for copy in copies:
        assert copy["branch_id"] == airport and copy["version"] == 1
        assert copy["updated_by"] == world.users["dave"]
    # Each one a create: its history and one case-created event each.
    history = (await dave.get(f"/api/cases/{copies[0]['id']}/history")).json()
    given = {name for name in EDITABLE_NAMES if copies[0][name] not in ("", None)}
    assert {entry["field"] for entry in history} >= given
    assert all(entry["version"] == 1 and entry["old"] is None for entry in history)
    assert await head(services, airport) == before + len(source)
    async with services.db.read() as session:
        kinds = (
            await session.execute(
                select(OutboxEvent.kind, func.count())
                .where(OutboxEvent.branch_id == airport, OutboxEvent.id > before)
                .group_by(OutboxEvent.kind)
            )
        ).all()
    assert kinds == [("case-created", len(source))]


async def test_a_bad_file_imports_nothing_and_reports_every_bad_row(
    users: dict[str, Any], services: Services, world: World
) -> None:
    downtown = world.branches["downtown"]
    url = f"/api/branches/{downtown}/cases/import"
    before = (await listing(users["dave"], downtown))["total"], await head(services, downtown)
    body = (
        "customer_name,customer_email,status,purchase_date,assignee_id,customer_phone\r\n"
        "Good One,good@example.com,new,2024-01-02,,\r\n"
        "Bad Mail,not-an-email,new,,,\r\n"
        ",nobody@example.com,closed,,,\r\n"
        "Bad Status,,open,,,\r\n"
        "Bad Date,,,2024-02-30,,\r\n"
        "Future,,,2999-01-01,,\r\n"
        f"Viewer,,,,{world.users['carol']},\r\n"
        f"Stranger,,,,{world.users['erin']},\r\n"
        "Not an id,,,,someone,\r\n"
        '"Two\nlines",,,,,' + "x" * 41 + "\r\n"
        "Short row,,\r\n"
        "Good Two,,ready,,,\r\n"
    )
    answer = await users["dave"].post(url, content=body.encode(), headers=CSV)
    assert answer.status_code == 422, answer.text
    report = answer.json()
    assert report["error"] == "validation_error"
    found = [(e["line"], e["field"], e["rule"]) for e in report["errors"]]
    assert found == [
        (3, "customer_email", "email"),
        (4, "customer_name", "required"),
        (5, "status", "choice"),
        (6, "purchase_date", "date"),
        (7, "purchase_date", "not_future"),
        (8, "assignee_id", "assignable"),
        (9, "assignee_id", "member"),
        (10, "assignee_id", "type"),
        (11, "customer_phone", "max_length"),  # the record starts on line 11, spans 12
        (13, "", "columns"),
    ]
    assert report["error_count"] == len(found)
    assert (report["line"], report["field"], report["rule"]) == found[0]
    assert "nothing was imported" in report["message"]
    assert all(e["message"] for e in report["errors"])
    after = (await listing(users["dave"], downtown))["total"], await head(services, downtown)
    assert after == before


@pytest.mark.parametrize(
    ("body", "line", "field", "rule"),
    [
        (b"", 1, "", "header"),
        (b"customer_name,colour\nA,red\n", 1, "colour", "unknown_field"),
        (b"customer_name,product,product\nA,b,c\n", 1, "product", "duplicate"),
        (b"product\nKettle\n", 1, "customer_name", "required"),
        (b"customer_name\nA\n\xff\xfe\n", 3, "", "encoding"),
        (b'customer_name\n"never closed\n', 2, "", "csv"),
    ],
)
async def test_a_file_that_cannot_be_read_is_422_naming_the_line(
    users: dict[str, Any], world: World, body: bytes, line: int, field: str, rule: str
) -> None:
    answer = await users["dave"].post(
        f"/api/branches/{world.branches['downtown']}/cases/import", content=body, headers=CSV
    )
    assert answer.status_code == 422, answer.text
    assert (answer.json()["line"], answer.json()["field"], answer.json()["rule"]) == (
        line,
        field,
        rule,
    )


async def test_a_dry_run_checks_everything_and_writes_nothing(
    users: dict[str, Any], services: Services, world: World
) -> None:
    downtown = world.branches["downtown"]
    url = f"/api/branches/{downtown}/cases/import"
    before = await head(services, downtown)
    body = "\ufeffcustomer_name,status\nA,new\n\nB,closed\n".encode()  # a BOM, a blank line
    answer = await users["dave"].post(url, params={"dry_run": "true"}, content=body, headers=CSV)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"rows": 2, "imported": 0, "dry_run": True, "case_numbers": []}
    assert await head(services, downtown) == before
    bad = await users["dave"].post(url, params={"dry_run": "true"}, content=b"x\n1\n", headers=CSV)
    assert bad.status_code == 422
    flag = await users["dave"].post(url, params={"dry_run": "maybe"}, content=body, headers=CSV)
    assert flag.status_code == 422 and flag.json()["field"] == "dry_run"


async def test_only_managers_import_and_the_body_is_capped(
    users: dict[str, Any], db_url: str, world: World
) -> None:
    downtown = world.branches["downtown"]
    url = f"/api/branches/{downtown}/cases/import"
    body = b"customer_name\nA\n"
    assert (await users["alice"].post(url, content=body, headers=CSV)).status_code == 403
    assert (await users["carol"].post(url, content=body, headers=CSV)).status_code == 403
    elsewhere = f"/api/branches/{world.branches['airport']}0/cases/import"
    assert (await users["dave"].post(elsewhere, content=body, headers=CSV)).status_code == 404
    refused = await users["dave"].post(url, content=body, headers={**CSV, "X-CSRF-Token": ""})
    assert refused.status_code == 403 and refused.json()["error"] == "csrf_failed"
    json_body = await users["dave"].post(url, json={"customer_name": "A"})
    assert json_body.status_code == 415
    app = create_app(make_settings(db_url, max_import_bytes=64 * 1024))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            http.headers.update(await login(http, "dave@example.com"))
            big = b"customer_name\n" + b"A long enough name\n" * 4000
            answer = await http.post(url, content=big, headers=CSV)
            assert answer.status_code == 413, answer.text
            fits = big[: 60 * 1024].rsplit(b"\n", 1)[0]
            assert (await http.post(url, content=fits, headers=CSV)).status_code == 200
