"""The cases API through the ASGI app: snapshot, create, read, PATCH, delete, history.

The PATCH answer order of docs/protocol.md ("PATCH") has one test per adjacent pair near the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import update

from conftest import login, make_settings
from factories import World, add_member, make_user
from warrantysync import create_app
from warrantysync.container import Services
from warrantysync.storage.models import Branch, Role

CASE_KEYS = {
    "id",
    "branch_id",
    "case_number",
    "customer_name",
    "customer_phone",
    "customer_email",
    "product",
    "serial_number",
    "purchase_date",
    "issue",
    "status",
    "priority",
    "assignee_id",
    "notes",
    "version",
    "created_at",
    "updated_at",
    "updated_by",
}
TEXT_LIMITS = {
    "customer_name": 120,
    "customer_phone": 40,
    "customer_email": 254,
    "product": 120,
    "serial_number": 80,
    "issue": 2000,
    "notes": 5000,
}
READ_ONLY = ["id", "branch_id", "case_number", "version", "created_at", "updated_at", "updated_by"]
JSON = {"Content-Type": "application/json"}


@dataclass
class Browser:
    """One logged-in user with their own cookie jar."""

    http: httpx.AsyncClient
    csrf: dict[str, str]

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(url, **kwargs)

    async def patch(
        self, case_id: int, body: Any, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.patch(
            f"/api/cases/{case_id}",
            content=json.dumps(body).encode(),
            headers={**JSON, **self.csrf, **(headers or {})},
        )

    async def patch_raw(
        self, case_id: int, content: bytes, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.patch(
            f"/api/cases/{case_id}", content=content, headers={**self.csrf, **(headers or {})}
        )

    async def create(self, branch_id: int, body: Any) -> httpx.Response:
        return await self.http.post(
            f"/api/branches/{branch_id}/cases",
            content=json.dumps(body).encode(),
            headers={**JSON, **self.csrf},
        )

    async def delete(self, case_id: int) -> httpx.Response:
        return await self.http.delete(f"/api/cases/{case_id}", headers=self.csrf)

    async def lock(self, case_id: int, field: str, client_id: str) -> httpx.Response:
        return await self.http.put(
            f"/api/cases/{case_id}/locks/{field}",
            headers={**self.csrf, "X-Client-Id": client_id},
        )

    async def unlock(self, case_id: int, field: str, client_id: str) -> httpx.Response:
        return await self.http.delete(
            f"/api/cases/{case_id}/locks/{field}",
            headers={**self.csrf, "X-Client-Id": client_id},
        )

    async def case(self, case_id: int) -> dict[str, Any]:
        response = await self.http.get(f"/api/cases/{case_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def history(self, case_id: int, **params: Any) -> list[dict[str, Any]]:
        response = await self.http.get(f"/api/cases/{case_id}/history", params=params)
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()
        return rows


As = Callable[[str], Awaitable[Browser]]


@pytest.fixture
async def as_user(app_services: tuple[Any, Services], world: World) -> AsyncIterator[As]:
    """``await as_user("alice")``: that user logged in on a client of their own."""
    opened: dict[str, Browser] = {}

    async def make(name: str) -> Browser:
        if name not in opened:
            transport = httpx.ASGITransport(app=app_services[0])
            http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
            opened[name] = Browser(http, await login(http, f"{name}@example.com"))
        return opened[name]

    yield make
    for browser in opened.values():
        await browser.http.aclose()


@contextlib.asynccontextmanager
async def other_app(db_url: str, **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(db_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http


def assert_error(
    response: httpx.Response, status: int, code: str, field: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    assert "Traceback" not in body["message"]
    if field is not None:
        assert body.get("field") == field, body
        assert field in body["message"], body
    return body


async def state(browser: Browser, world: World, case_id: int) -> Any:
    """Everything a rejected write must leave alone."""
    snapshot = (await browser.get(f"/api/branches/{world.branches['downtown']}/cases")).json()
    return await browser.case(case_id), await browser.history(case_id), snapshot["last_event_id"]


async def set_timezone(services: Services, branch_id: int, zone: str) -> None:
    async with services.db.write() as session:
        await session.execute(update(Branch).where(Branch.id == branch_id).values(timezone=zone))


def today_in(zone: str) -> dt.date:
    return dt.datetime.now(ZoneInfo(zone)).date()


# -- snapshot -------------------------------------------------------------------------


async def test_snapshot_shape(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.get(f"/api/branches/{world.branches['downtown']}/cases")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "cases",
        "locks",
        "presence",
        "row_presence",
        "live_state",
        "last_event_id",
    }
    assert body["live_state"] == "ok"
    assert [case["id"] for case in body["cases"]] == [world.cases["phone"], world.cases["laptop"]]
    for case in body["cases"]:
        assert set(case) == CASE_KEYS
        assert case["branch_id"] == world.branches["downtown"]
    phone = body["cases"][0]
    assert phone["customer_name"] == "John Smith"
    assert phone["product"] == "iPhone 14"
    assert (phone["status"], phone["priority"], phone["version"]) == ("new", "normal", 1)
    assert (phone["assignee_id"], phone["purchase_date"]) == (None, None)
    assert body["locks"] == [] and body["presence"] == []
    assert isinstance(body["last_event_id"], str) and body["last_event_id"].isdigit()
    assert int(body["last_event_id"]) == 2  # two cases created in this branch
    assert response.headers["etag"].startswith('"')
    assert response.headers["content-type"].startswith("application/json")


async def test_snapshot_etag_and_if_none_match(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    url = f"/api/branches/{world.branches['downtown']}/cases"
    first = await alice.get(url)
    etag = first.headers["etag"]
    cached = await alice.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["etag"] == etag
    assert (await alice.get(url, headers={"If-None-Match": '"other"'})).status_code == 200
    for header in (f"W/{etag}", f'"other", {etag}', "*"):
        assert (await alice.get(url, headers={"If-None-Match": header})).status_code == 304
    # A committed change moves the ETag.
    assert (await alice.patch(world.cases["phone"], {"changes": {"notes": "n"}})).status_code == 200
    changed = await alice.get(url, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    etag = changed.headers["etag"]
    # So does a lock: the snapshot carries locks.
    assert (await alice.lock(world.cases["phone"], "notes", "tab-1")).status_code == 200
    locked = await alice.get(url, headers={"If-None-Match": etag})
    assert locked.status_code == 200
    assert [lock["field"] for lock in locked.json()["locks"]] == ["notes"]
    assert "token" not in locked.json()["locks"][0]
    # Branches never share an ETag.
    other = await alice.get(f"/api/branches/{world.branches['airport']}/cases")
    assert other.headers["etag"] != locked.headers["etag"]


async def test_snapshot_is_per_branch(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    body = (await alice.get(f"/api/branches/{world.branches['airport']}/cases")).json()
    assert [case["id"] for case in body["cases"]] == [world.cases["airport"]]


async def test_anonymous_is_401(client: httpx.AsyncClient, world: World) -> None:
    for url in (
        f"/api/branches/{world.branches['downtown']}/cases",
        f"/api/cases/{world.cases['phone']}",
        f"/api/cases/{world.cases['phone']}/history",
    ):
        assert_error(await client.get(url), 401, "not_authenticated")


# -- visibility -------------------------------------------------------------------------


async def test_non_member_gets_404_everywhere(as_user: As, world: World) -> None:
    bob = await as_user("bob")  # downtown only
    airport_case, airport = world.cases["airport"], world.branches["airport"]
    before = await (await as_user("erin")).case(airport_case)
    responses = {
        "list": await bob.get(f"/api/branches/{airport}/cases"),
        "get": await bob.get(f"/api/cases/{airport_case}"),
        "patch": await bob.patch(airport_case, {"changes": {"notes": "x"}}),
        "history": await bob.get(f"/api/cases/{airport_case}/history"),
        "lock": await bob.lock(airport_case, "notes", "tab-1"),
        "unlock": await bob.unlock(airport_case, "notes", "tab-1"),
        "create": await bob.create(airport, {"customer_name": "X"}),
        "delete": await bob.delete(airport_case),
    }
    async with asyncio.timeout(10):
        responses["events"] = await bob.get(
            f"/api/branches/{airport}/events", params={"client_id": "tab-1"}
        )
    for what, response in responses.items():
        assert response.status_code == 404, (what, response.text)
        assert response.json()["error"] == "not_found", what
    assert await (await as_user("erin")).case(airport_case) == before


async def test_missing_and_foreign_look_the_same(as_user: As, world: World) -> None:
    bob = await as_user("bob")
    foreign = await bob.get(f"/api/cases/{world.cases['airport']}")
    missing = await bob.get("/api/cases/999999")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    foreign = await bob.get(f"/api/branches/{world.branches['airport']}/cases")
    missing = await bob.get("/api/branches/999999/cases")
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()


async def test_viewer_reads_but_cannot_write(as_user: As, world: World) -> None:
    carol = await as_user("carol")
    phone = world.cases["phone"]
    assert (await carol.get(f"/api/branches/{world.branches['downtown']}/cases")).status_code == 200
    assert (await carol.case(phone))["id"] == phone
    assert await carol.history(phone) is not None
    before = await state(carol, world, phone)
    for response in (
        await carol.patch(phone, {"changes": {"notes": "viewer"}}),
        await carol.create(world.branches["downtown"], {"customer_name": "Viewer"}),
        await carol.lock(phone, "notes", "tab-1"),
        await carol.unlock(phone, "notes", "tab-1"),
        await carol.delete(phone),
    ):
        assert_error(response, 403, "forbidden")
    assert await state(carol, world, phone) == before


# -- create -------------------------------------------------------------------------------


async def test_create_case(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    downtown = world.branches["downtown"]
    response = await alice.create(
        downtown,
        {
            "customer_name": "  Nora Field ",
            "customer_phone": "+1 555 0100",
            "customer_email": "nora@example.com",
            "product": "Pixel 8",
            "serial_number": "SN-1",
            "purchase_date": "2024-01-15",
            "issue": "Cracked screen",
            "status": "diagnosing",
            "priority": "high",
            "assignee_id": world.users["bob"],
            "notes": "",
        },
    )
    assert response.status_code == 201, response.text
    case = response.json()
    assert set(case) == CASE_KEYS
    assert re.fullmatch(r"WC-\d{6}", case["case_number"])
    assert case["version"] == 1
    assert case["branch_id"] == downtown
    assert case["customer_name"] == "Nora Field"
    assert case["purchase_date"] == "2024-01-15"
    assert (case["status"], case["priority"]) == ("diagnosing", "high")
    assert case["assignee_id"] == world.users["bob"]
    assert case["updated_by"] == world.users["alice"]
    assert await alice.case(case["id"]) == case
    snapshot = (await alice.get(f"/api/branches/{downtown}/cases")).json()
    assert case["id"] in [c["id"] for c in snapshot["cases"]]
    assert snapshot["last_event_id"] == "3"


async def test_create_defaults_and_unique_numbers(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    numbers = set()
    for branch in ("downtown", "airport", "downtown"):
        response = await alice.create(world.branches[branch], {"customer_name": "Min"})
        assert response.status_code == 201, response.text
        case = response.json()
        assert (case["status"], case["priority"], case["version"]) == ("new", "normal", 1)
        assert case["customer_phone"] == case["notes"] == ""
        assert case["purchase_date"] is None and case["assignee_id"] is None
        numbers.add(case["case_number"])
    existing = {(await alice.case(c))["case_number"] for c in world.cases.values()}
    assert len(numbers) == 3 and not numbers & existing


async def test_create_needs_a_customer_name(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    for body in ({}, {"product": "Kettle"}, {"customer_name": "  "}):
        response = await alice.create(world.branches["downtown"], body)
        assert_error(response, 422, "validation_error", "customer_name")


async def test_create_refuses_non_objects_and_bad_bodies(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    url = f"/api/branches/{world.branches['downtown']}/cases"
    for body in ([], "x", 1, None):
        assert_error(await alice.create(world.branches["downtown"], body), 422, "validation_error")
    response = await alice.http.post(url, content=b"{nope", headers={**alice.csrf, **JSON})
    assert_error(response, 422, "invalid_json")
    response = await alice.http.post(
        url, content=b'{"customer_name": "A"}', headers={**alice.csrf, "Content-Type": "text/plain"}
    )
    assert_error(response, 415, "unsupported_media_type")
    response = await alice.http.post(
        url, content=b" " * (64 * 1024 + 1), headers={**alice.csrf, **JSON}
    )
    assert_error(response, 413, "payload_too_large")
    snapshot = (await alice.get(url)).json()
    assert len(snapshot["cases"]) == 2 and snapshot["last_event_id"] == "2"


# -- validation (PATCH and POST) ---------------------------------------------------------


def long_email(length: int) -> str:
    """A syntactically valid address of ``length`` characters (DNS labels ≤ 63)."""
    tail = length - 64 - 1 - 63 - 1 - 63 - 1 - 4
    value = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * tail + ".com"
    assert len(value) == length
    return value


def invalid_cases(world: World, tomorrow: str) -> list[tuple[str, Any, str]]:
    """(field, value, rule) that must be refused."""
    cases: list[tuple[str, Any, str]] = []
    for field, limit in TEXT_LIMITS.items():
        if field == "customer_email":
            value = long_email(limit + 1)
            cases.append((field, value, "max_length"))
        else:
            cases.append((field, "x" * (limit + 1), "max_length"))
    cases += [
        ("customer_name", "", "required"),
        ("customer_name", "   \t", "required"),
        ("customer_name", None, "type"),
        ("status", "open", "choice"),
        ("status", "NEW", "choice"),
        ("priority", "critical", "choice"),
        ("priority", 3, "choice"),
        ("customer_email", "not-an-email", "email"),
        ("customer_email", "a@b@example.com", "email"),
        ("purchase_date", tomorrow, "not_future"),
        ("purchase_date", "15/01/2024", "date"),
        ("purchase_date", "2024-02-30", "date"),
        ("purchase_date", "2024-1-5", "date"),
        ("purchase_date", 20240115, "type"),
        ("assignee_id", world.users["erin"], "member"),  # airport only
        ("assignee_id", 999999, "member"),
        ("assignee_id", world.users["carol"], "assignable"),  # a viewer of downtown
        ("assignee_id", "2", "type"),
        ("notes", 5, "type"),
        ("colour", "red", "unknown_field"),
        *[(field, 1, "read_only") for field in READ_ONLY],
    ]
    return cases


def valid_cases(world: World, today: str) -> list[tuple[str, Any, Any]]:
    """(field, value sent, value stored)."""
    cases: list[tuple[str, Any, Any]] = []
    for field, limit in TEXT_LIMITS.items():
        if field == "customer_email":
            value = long_email(limit)
            cases.append((field, value, value))
        else:
            cases.append((field, "y" * limit, "y" * limit))
    cases += [
        ("customer_email", "", ""),
        ("customer_email", "ok@example.com", "ok@example.com"),
        ("customer_name", "  Trim Me  ", "Trim Me"),
        ("status", "awaiting_parts", "awaiting_parts"),
        ("priority", "urgent", "urgent"),
        ("purchase_date", today, today),
        ("purchase_date", "2020-02-29", "2020-02-29"),
        ("purchase_date", None, None),
        ("assignee_id", world.users["bob"], world.users["bob"]),
        ("assignee_id", None, None),
    ]
    return cases


async def test_every_invalid_value_is_422_on_patch_and_changes_nothing(
    as_user: As, world: World
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    tomorrow = (today_in("UTC") + dt.timedelta(days=1)).isoformat()
    before = await state(alice, world, phone)
    for field, value, rule in invalid_cases(world, tomorrow):
        response = await alice.patch(phone, {"changes": {field: value}})
        body = assert_error(response, 422, "validation_error", field)
        assert body["rule"] == rule, (field, value, body)
    assert await state(alice, world, phone) == before


async def test_every_invalid_value_is_422_on_create(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    downtown = world.branches["downtown"]
    tomorrow = (today_in("UTC") + dt.timedelta(days=1)).isoformat()
    for field, value, rule in invalid_cases(world, tomorrow):
        body = {"customer_name": "Valid Name", field: value}
        response = await alice.create(downtown, body)
        error = assert_error(response, 422, "validation_error", field)
        assert error["rule"] == rule, (field, value, error)
    snapshot = (await alice.get(f"/api/branches/{downtown}/cases")).json()
    assert len(snapshot["cases"]) == 2 and snapshot["last_event_id"] == "2"


async def test_every_limit_value_is_accepted_on_patch(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    version = (await alice.case(phone))["version"]
    for field, value, stored in valid_cases(world, today_in("UTC").isoformat()):
        response = await alice.patch(phone, {"changes": {field: value}})
        assert response.status_code == 200, (field, value, response.text)
        assert response.json()[field] == stored, field
        version = response.json()["version"]
    assert (await alice.case(phone))["version"] == version


async def test_every_limit_value_is_accepted_on_create(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    for field, value, stored in valid_cases(world, today_in("UTC").isoformat()):
        body = {"customer_name": "Valid Name", field: value}
        response = await alice.create(world.branches["downtown"], body)
        assert response.status_code == 201, (field, value, response.text)
        assert response.json()[field] == stored, field


async def test_purchase_date_uses_the_branch_time_zone(
    as_user: As, services: Services, world: World
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    # UTC+14: "today" there is often tomorrow in UTC, and must be accepted.
    await set_timezone(services, world.branches["downtown"], "Pacific/Kiritimati")
    east_today = today_in("Pacific/Kiritimati")
    response = await alice.patch(phone, {"changes": {"purchase_date": east_today.isoformat()}})
    assert response.status_code == 200, response.text
    tomorrow = (east_today + dt.timedelta(days=1)).isoformat()
    response = await alice.patch(phone, {"changes": {"purchase_date": tomorrow}})
    assert_error(response, 422, "validation_error", "purchase_date")
    # UTC-11: Kiritimati's today is always in the future there.
    await set_timezone(services, world.branches["downtown"], "Pacific/Pago_Pago")
    response = await alice.patch(phone, {"changes": {"purchase_date": east_today.isoformat()}})
    assert_error(response, 422, "validation_error", "purchase_date")
    west_today = today_in("Pacific/Pago_Pago").isoformat()
    response = await alice.patch(phone, {"changes": {"purchase_date": west_today}})
    assert response.status_code == 200, response.text


async def test_assignee_must_be_a_member_of_the_cases_branch(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    # erin is a member of airport: fine there, refused downtown.
    ok = await alice.patch(
        world.cases["airport"], {"changes": {"assignee_id": world.users["erin"]}}
    )
    assert ok.status_code == 200, ok.text
    refused = await alice.patch(
        world.cases["phone"], {"changes": {"assignee_id": world.users["erin"]}}
    )
    assert_error(refused, 422, "validation_error", "assignee_id")


async def test_a_viewer_cannot_be_the_assignee(as_user: As, world: World) -> None:
    dave = await as_user("dave")
    phone = world.cases["phone"]
    refused = await dave.patch(phone, {"changes": {"assignee_id": world.users["carol"]}})
    assert_error(refused, 422, "validation_error", "assignee_id")
    assert refused.json()["rule"] == "assignable"
    assert (await dave.get(f"/api/cases/{phone}")).json()["assignee_id"] is None
    created = await dave.create(
        world.branches["downtown"],
        {"customer_name": "Vi Ewer", "assignee_id": world.users["carol"]},
    )
    assert_error(created, 422, "validation_error", "assignee_id")
    ok = await dave.patch(phone, {"changes": {"assignee_id": world.users["dave"]}})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ("changes", "body"),
        (17, "body"),
        (None, "body"),
        ({"changes": []}, "changes"),
        ({"changes": "notes"}, "changes"),
        ({"changes": None}, "changes"),
        ({"changes": {}}, "changes"),
        ({}, "changes"),
        ({"expected": {"notes": ""}}, "changes"),
        ({"changes": {"notes": "a"}, "expected": []}, "expected"),
        ({"changes": {"notes": "a"}, "lock_tokens": "t"}, "lock_tokens"),
        ({"changes": {"notes": "a"}, "lock_tokens": {"notes": 5}}, "lock_tokens"),
        ({"changes": {"notes": "a"}, "expected": {"status": "new"}}, "status"),
        ({"changes": {"notes": "a"}, "lock_tokens": {"status": "tok"}}, "status"),
        ({"changes": {"notes": "a"}, "expected": {"colour": "x"}}, "colour"),
        ({"changes": {"notes": "a"}, "extra": 1}, "extra"),
        ({"changes": {"notes": "a"}, "version": 1}, "version"),
    ],
)
async def test_patch_body_shape_is_422_naming_the_member(
    as_user: As, world: World, body: Any, field: str
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    before = await state(alice, world, phone)
    assert_error(await alice.patch(phone, body), 422, "validation_error", field)
    assert await state(alice, world, phone) == before


# (body, X-Client-Id, field, rule, message) of a 422 validation_error.
PATCH_REFUSALS = [
    (b"[]", None, "body", "type", "body: must be a JSON object"),
    (b'"changes"', None, "body", "type", "body: must be a JSON object"),
    (b"17", None, "body", "type", "body: must be a JSON object"),
    (b"null", None, "body", "type", "body: must be a JSON object"),
    (b"true", None, "body", "type", "body: must be a JSON object"),
    (b"1.5", None, "body", "type", "body: must be a JSON object"),
    (b"{}", None, "changes", "required", "changes: must name at least one field"),
    (b'{"changes": {}}', None, "changes", "required", "changes: must name at least one field"),
    (b'{"changes": []}', None, "changes", "type", "changes: must be a JSON object"),
    (b'{"changes": null}', None, "changes", "type", "changes: must be a JSON object"),
    (b'{"changes": "notes"}', None, "changes", "type", "changes: must be a JSON object"),
    (b'{"changes": 3}', None, "changes", "type", "changes: must be a JSON object"),
    (
        b'{"changes": {"notes": "a"}, "expected": []}',
        None,
        "expected",
        "type",
        "expected: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "expected": null}',
        None,
        "expected",
        "type",
        "expected: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "expected": "x"}',
        None,
        "expected",
        "type",
        "expected: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": []}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": null}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": "t"}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": 5}}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: values must be strings",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": null}}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: values must be strings",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": ["t"]}}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: values must be strings",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": true}}',
        None,
        "lock_tokens",
        "type",
        "lock_tokens: values must be strings",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"status": "t"}}',
        None,
        "status",
        "lock_tokens_without_change",
        "lock_tokens.status: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"status": 5}}',
        None,
        "status",
        "lock_tokens_without_change",
        "lock_tokens.status: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": 5, "status": "t"}}',
        None,
        "status",
        "lock_tokens_without_change",
        "lock_tokens.status: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}, "extra": 1}',
        None,
        "extra",
        "unknown_member",
        "extra: unknown member",
    ),
    (b'{"extra": 1, "changes": []}', None, "extra", "unknown_member", "extra: unknown member"),
    (b'{"changes": [], "extra": 1}', None, "extra", "unknown_member", "extra: unknown member"),
    (b'{"a": 1, "b": 2}', None, "a", "unknown_member", "a: unknown member"),
    (
        b'{"changes": {"notes": "a"}, "version": 1}',
        None,
        "version",
        "unknown_member",
        "version: unknown member",
    ),
    (b'{"changes": [], "expected": []}', None, "changes", "type", "changes: must be a JSON object"),
    (
        b'{"changes": {}, "expected": []}',
        None,
        "changes",
        "required",
        "changes: must name at least one field",
    ),
    (
        b'{"expected": [], "changes": {}}',
        None,
        "changes",
        "required",
        "changes: must name at least one field",
    ),
    (
        b'{"expected": {"notes": ""}}',
        None,
        "changes",
        "required",
        "changes: must name at least one field",
    ),
    (b'{"lock_tokens": []}', None, "changes", "required", "changes: must name at least one field"),
    (
        b'{"changes": {"notes": "a"}, "expected": [], "lock_tokens": []}',
        None,
        "expected",
        "type",
        "expected: must be a JSON object",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": [], "expected": []}',
        None,
        "expected",
        "type",
        "expected: must be a JSON object",
    ),
    (b'{"changes": {"colour": 1}}', None, "colour", "unknown_field", "colour: unknown field"),
    (b'{"changes": {"id": 1}}', None, "id", "read_only", "id: is read-only"),
    (b'{"changes": {"notes": 5}}', None, "notes", "type", "notes: must be a string"),
    (
        b'{"changes": {"status": "bogus"}, "expected": {"colour": 1}}',
        None,
        "status",
        "choice",
        "status: must be one of new, diagnosing, awaiting_parts, in_repair, ready, closed,"
        " rejected",
    ),
    (
        b'{"changes": {"notes": "a"}, "expected": {"status": "new"}}',
        None,
        "status",
        "expected_without_change",
        "expected.status: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}, "expected": {"colour": "x"}}',
        None,
        "colour",
        "expected_without_change",
        "expected.colour: names a field that is not in changes",
    ),
    (
        b'{"changes": {"status": "bogus"}, "lock_tokens": {"notes": "x"}}',
        None,
        "notes",
        "lock_tokens_without_change",
        "lock_tokens.notes: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": "t"}, "expected": {"status": 1}}',
        None,
        "status",
        "expected_without_change",
        "expected.status: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}}',
        "bad id",
        "X-Client-Id",
        "client_id",
        "X-Client-Id: must be 1..64 letters, digits, '-' or '_'; one '.' may join two parts",
    ),
    (
        b'{"changes": {"notes": "a"}}',
        "",
        "X-Client-Id",
        "client_id",
        "X-Client-Id: must be 1..64 letters, digits, '-' or '_'; one '.' may join two parts",
    ),
    (
        b'{"changes": {"notes": "a"}}',
        "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "X-Client-Id",
        "client_id",
        "X-Client-Id: must be 1..64 letters, digits, '-' or '_'; one '.' may join two parts",
    ),
    (
        b'{"changes": {"notes": "a"}}',
        "a.b.c",
        "X-Client-Id",
        "client_id",
        "X-Client-Id: must be 1..64 letters, digits, '-' or '_'; one '.' may join two parts",
    ),
    (b'{"changes": []}', "bad id", "changes", "type", "changes: must be a JSON object"),
    (
        b'{"changes": {"status": "bogus"}}',
        "bad id",
        "X-Client-Id",
        "client_id",
        "X-Client-Id: must be 1..64 letters, digits, '-' or '_'; one '.' may join two parts",
    ),
    (
        b'{"changes": {"notes": "a"}, "lock_tokens": {"status": "t"}}',
        "bad id",
        "status",
        "lock_tokens_without_change",
        "lock_tokens.status: names a field that is not in changes",
    ),
    (
        b'{"changes": {"notes": "a"}, "changes": []}',
        None,
        "changes",
        "type",
        "changes: must be a JSON object",
    ),
    (
        b'{"changes": [], "changes": {"notes": "a"}, "x": 1, "x": 2}',
        None,
        "x",
        "unknown_member",
        "x: unknown member",
    ),
    (
        b'{"changes": {"assignee_id": 123456789012345678901234567890}}',
        None,
        "assignee_id",
        "type",
        "assignee_id: must be a user id or null",
    ),
    (
        b'{"changes": {"assignee_id": 1.0}}',
        None,
        "assignee_id",
        "type",
        "assignee_id: must be a user id or null",
    ),
    (
        b'{"changes": {"assignee_id": true}}',
        None,
        "assignee_id",
        "type",
        "assignee_id: must be a user id or null",
    ),
]
NOT_JSON = [
    b'{"changes": {"notes": NaN}}',
    b'{"changes": {"notes": "\\ud800"}}',
    b'{"changes": {"notes": "a"}, "lock_tokens": {"notes": "\\ud800"}}',
    b'{"changes": {"notes": 1e400}}',
    b'\xef\xbb\xbf{"changes": {"notes": "a"}}',
    b'{"changes": {"notes": "a"}} x',
]


async def test_patch_refusals_name_the_member_the_rule_and_the_message(
    as_user: As, world: World
) -> None:
    """Every refusal of a PATCH body, word for word, in the contract's order of checks.

    The body's shape first (unknown members, then ``changes``, ``expected``,
    ``lock_tokens``), then ``X-Client-Id``, then the fields' rules, then
    ``expected`` naming a field outside ``changes``; malformed JSON is
    ``invalid_json``. Nothing is written (docs/protocol.md, PATCH).
    """
    alice = await as_user("alice")
    phone = world.cases["phone"]
    before = await state(alice, world, phone)
    for raw, client_id, field, rule, message in PATCH_REFUSALS:
        headers = {**JSON, **({} if client_id is None else {"X-Client-Id": client_id})}
        response = await alice.patch_raw(phone, raw, headers)
        assert response.status_code == 422, (raw, response.text)
        want = {"error": "validation_error", "message": message, "field": field, "rule": rule}
        assert response.json() == want, raw
    for raw in NOT_JSON:
        response = await alice.patch_raw(phone, raw, JSON)
        assert response.status_code == 422, (raw, response.text)
        assert response.json() == {"error": "invalid_json", "message": "the body is not valid JSON"}
    assert await state(alice, world, phone) == before


async def test_a_multi_field_patch_is_all_or_nothing(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    before = await state(alice, world, phone)
    response = await alice.patch(
        phone, {"changes": {"notes": "fine", "status": "ready", "priority": "whenever"}}
    )
    assert_error(response, 422, "validation_error", "priority")
    assert await state(alice, world, phone) == before


# -- transport-level refusals ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_non_json_content_type_is_415(
    as_user: As, world: World, content_type: str | None
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await alice.patch_raw(phone, b'{"changes": {"notes": "x"}}', headers)
    assert_error(response, 415, "unsupported_media_type")
    assert (await alice.case(phone))["version"] == 1


async def test_json_media_type_variants_are_accepted(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    for media in ("application/json; charset=utf-8", "APPLICATION/JSON"):
        response = await alice.patch_raw(
            world.cases["phone"],
            json.dumps({"changes": {"notes": media}}).encode(),
            {"Content-Type": media},
        )
        assert response.status_code == 200, (media, response.text)


async def test_body_over_64_kib_is_413(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    padding = 64 * 1024 - len(b'{"changes": {"notes": ""}}')
    exact = b'{"changes": {"notes": "' + b"x" * padding + b'"}}'
    assert len(exact) == 64 * 1024
    # Exactly 64 KiB is read (and refused for the note's length, not the body's size).
    assert_error(await alice.patch_raw(phone, exact, JSON), 422, "validation_error", "notes")
    over = b'{"changes": {"notes": "' + b"x" * (padding + 1) + b'"}}'
    assert_error(await alice.patch_raw(phone, over, JSON), 413, "payload_too_large")
    assert (await alice.case(phone))["version"] == 1


async def test_chunked_body_over_64_kib_is_413(as_user: As, world: World) -> None:
    """No Content-Length to trust: the limit holds while reading."""
    alice = await as_user("alice")

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"changes": {"notes": "'
        for _ in range(20):
            yield b"x" * 4096
        yield b'"}}'

    response = await alice.http.patch(
        f"/api/cases/{world.cases['phone']}", content=chunks(), headers={**alice.csrf, **JSON}
    )
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "raw", [b"{", b"", b"{'changes': {}}", b'{"changes": {"notes": "x"}', b"\xff"]
)
async def test_malformed_json_is_422_invalid_json(as_user: As, world: World, raw: bytes) -> None:
    alice = await as_user("alice")
    assert_error(await alice.patch_raw(world.cases["phone"], raw, JSON), 422, "invalid_json")


# -- expected, versions and audit --------------------------------------------------------------


async def test_expected_match_saves_and_mismatch_is_409(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    response = await alice.patch(
        phone,
        {"changes": {"customer_name": "Jon Smith"}, "expected": {"customer_name": "John Smith"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["customer_name"] == "Jon Smith"
    before = await state(bob, world, phone)
    response = await bob.patch(
        phone,
        {
            "changes": {"customer_name": "Johnny", "notes": "x"},
            "expected": {"customer_name": "John Smith", "notes": ""},
        },
    )
    body = assert_error(response, 409, "conflict")
    assert body["current"] == {"customer_name": "Jon Smith"}  # only the stale field
    assert body["by"] == {"id": world.users["alice"], "name": "Alice Johnson"}
    assert "customer_name" in body["message"]
    assert await state(bob, world, phone) == before


async def test_expected_is_compared_in_json_form(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    setup = {"purchase_date": "2024-03-01", "status": "ready", "assignee_id": world.users["bob"]}
    assert (await alice.patch(phone, {"changes": setup})).status_code == 200
    response = await alice.patch(
        phone,
        {
            "changes": {"purchase_date": None, "status": "closed", "assignee_id": None},
            "expected": setup,
        },
    )
    assert response.status_code == 200, response.text
    response = await alice.patch(
        phone, {"changes": {"purchase_date": "2024-03-02"}, "expected": {"purchase_date": None}}
    )
    assert response.status_code == 200, response.text
    response = await alice.patch(
        phone,
        {"changes": {"purchase_date": "2024-03-03"}, "expected": {"purchase_date": "2024-03-01"}},
    )
    body = assert_error(response, 409, "conflict")
    assert body["current"] == {"purchase_date": "2024-03-02"}


async def test_conflict_by_names_the_last_writer(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.patch(
        world.cases["phone"], {"changes": {"notes": "x"}, "expected": {"notes": "stale"}}
    )
    body = assert_error(response, 409, "conflict")
    assert body["current"] == {"notes": ""}
    assert body["by"] == {"id": world.users["dave"], "name": "Dave Kim"}  # the creator


async def test_version_bumps_by_one_per_committed_change(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    v1 = await alice.case(phone)
    assert v1["version"] == 1
    r2 = (await alice.patch(phone, {"changes": {"notes": "a"}})).json()
    assert r2["version"] == 2
    assert r2["updated_by"] == world.users["alice"]
    assert r2["updated_at"] >= v1["updated_at"]
    r3 = (await alice.patch(phone, {"changes": {"notes": "b", "status": "ready"}})).json()
    assert r3["version"] == 3  # several fields, one change
    assert await alice.case(phone) == r3
    # The other case is untouched.
    assert (await alice.case(world.cases["laptop"]))["version"] == 1


async def test_a_patch_that_changes_nothing_does_not_bump(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    before = await state(alice, world, phone)
    for changes in (
        {"customer_name": "John Smith"},
        {"customer_name": "  John Smith  "},  # trimmed to the same value
        {"status": "new", "priority": "normal", "assignee_id": None, "purchase_date": None},
        {"product": "iPhone 14", "notes": ""},
    ):
        response = await alice.patch(phone, {"changes": changes})
        assert response.status_code == 200, response.text
        assert response.json()["version"] == 1
    assert await state(alice, world, phone) == before
    # Only the fields that really changed are audited.
    response = await alice.patch(phone, {"changes": {"product": "iPhone 14", "notes": "new"}})
    assert response.json()["version"] == 2
    assert [row["field"] for row in await alice.history(phone)][:1] == ["notes"]
    assert len(await alice.history(phone)) == len(before[1]) + 1


async def test_audit_rows_and_history(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    created = await alice.history(phone)
    assert {row["field"] for row in created} >= {"customer_name", "product"}
    assert all(row["old"] is None and row["version"] == 1 for row in created)
    await alice.patch(phone, {"changes": {"status": "diagnosing", "notes": "look at it"}})
    await bob.patch(phone, {"changes": {"status": "in_repair"}})
    await bob.patch(phone, {"changes": {"assignee_id": world.users["bob"]}})
    rows = await alice.history(phone)
    assert len(rows) == len(created) + 4
    newest = rows[:4]
    for row in rows:
        assert set(row) >= {"field", "old", "new", "user", "at", "version"}
    assert (newest[0]["field"], newest[0]["old"], newest[0]["new"]) == (
        "assignee_id",
        None,
        world.users["bob"],
    )
    assert newest[0]["user"] == {"id": world.users["bob"], "name": "Bob Smith"}
    assert newest[0]["version"] == 4
    assert (newest[1]["field"], newest[1]["old"], newest[1]["new"], newest[1]["version"]) == (
        "status",
        "diagnosing",
        "in_repair",
        3,
    )
    alice_rows = {row["field"]: row for row in newest[2:]}
    assert set(alice_rows) == {"status", "notes"}
    assert alice_rows["status"]["old"] == "new" and alice_rows["status"]["new"] == "diagnosing"
    assert alice_rows["notes"]["old"] == "" and alice_rows["notes"]["new"] == "look at it"
    assert {row["version"] for row in alice_rows.values()} == {2}
    assert all(row["user"]["id"] == world.users["alice"] for row in alice_rows.values())
    versions = [row["version"] for row in rows]
    assert versions == sorted(versions, reverse=True)
    ats = [row["at"] for row in rows]
    assert ats == sorted(ats, reverse=True)
    assert all(isinstance(at, str) for at in ats)


async def test_history_limit_and_before(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    for i in range(5):
        await alice.patch(phone, {"changes": {"notes": f"n{i}"}})
    everything = await alice.history(phone)
    assert [row["new"] for row in everything[:5]] == ["n4", "n3", "n2", "n1", "n0"]
    assert await alice.history(phone, limit=2) == everything[:2]
    page = await alice.history(phone, limit=2, before=everything[1]["id"])
    assert page == everything[2:4]
    assert await alice.history(phone, before=everything[-1]["id"]) == []
    for params in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"before": 0}):
        response = await alice.get(f"/api/cases/{phone}/history", params=params)
        assert_error(response, 422, "validation_error")


async def test_history_404(as_user: As, world: World) -> None:
    bob = await as_user("bob")
    for case_id in (world.cases["airport"], 999999):
        assert_error(await bob.get(f"/api/cases/{case_id}/history"), 404, "not_found")


# -- idempotency ------------------------------------------------------------------------------


async def test_idempotent_retry_gets_the_first_answer(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "save-1"}
    body = {"changes": {"notes": "once"}, "expected": {"notes": ""}}
    first = await alice.patch(phone, body, key)
    assert first.status_code == 200
    assert first.json()["version"] == 2
    after_first = await state(alice, world, phone)
    second = await alice.patch(phone, body, key)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert await state(alice, world, phone) == after_first
    # Even after someone else changed the case, the retry repeats the first answer.
    assert (await bob.patch(phone, {"changes": {"notes": "bob"}})).status_code == 200
    third = await alice.patch(phone, body, key)
    assert (third.status_code, third.json()) == (200, first.json())
    assert (await alice.case(phone))["notes"] == "bob"
    assert (await alice.case(phone))["version"] == 3


async def test_idempotency_key_with_another_body_is_422(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "save-2"}
    assert (await alice.patch(phone, {"changes": {"notes": "a"}}, key)).status_code == 200
    after = await state(alice, world, phone)
    response = await alice.patch(phone, {"changes": {"notes": "b"}}, key)
    assert_error(response, 422, "idempotency_key_reused")
    # Another case (another path) with the same key is another request too.
    response = await alice.patch(world.cases["laptop"], {"changes": {"notes": "a"}}, key)
    assert_error(response, 422, "idempotency_key_reused")
    # Even a malformed body: the key check comes first.
    response = await alice.patch_raw(phone, b"{", {**JSON, **key})
    assert_error(response, 422, "idempotency_key_reused")
    assert await state(alice, world, phone) == after
    assert (await alice.case(world.cases["laptop"]))["version"] == 1


async def test_idempotency_keys_are_per_user(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "shared"}
    assert (await alice.patch(phone, {"changes": {"notes": "a"}}, key)).json()["version"] == 2
    response = await bob.patch(phone, {"changes": {"notes": "a2"}}, key)
    assert response.status_code == 200 and response.json()["version"] == 3


async def test_a_4xx_answer_is_remembered(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "conflict-1"}
    body = {"changes": {"notes": "mine"}, "expected": {"notes": "what I saw"}}
    first = await alice.patch(phone, body, key)
    assert_error(first, 409, "conflict")
    # The data now matches `expected`, but the key already has its answer.
    assert (await bob.patch(phone, {"changes": {"notes": "what I saw"}})).status_code == 200
    again = await alice.patch(phone, body, key)
    assert (again.status_code, again.json()) == (409, first.json())
    assert (await alice.case(phone))["notes"] == "what I saw"
    # A 422 likewise: same key, same body, same 422.
    key = {"Idempotency-Key": "invalid-1"}
    first = await alice.patch(phone, {"changes": {"status": "bogus"}}, key)
    assert_error(first, 422, "validation_error", "status")
    again = await alice.patch(phone, {"changes": {"status": "bogus"}}, key)
    assert (again.status_code, again.json()) == (422, first.json())
    key = {"Idempotency-Key": "broken-json"}
    first = await alice.patch_raw(phone, b"{", {**JSON, **key})
    assert_error(first, 422, "invalid_json")
    again = await alice.patch_raw(phone, b"{", {**JSON, **key})
    assert (again.status_code, again.json()) == (422, first.json())


async def test_a_locked_answer_is_remembered(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    key = {"Idempotency-Key": "locked-1"}
    first = await alice.patch(phone, {"changes": {"notes": "x"}}, key)
    assert_error(first, 423, "locked")
    assert (await bob.unlock(phone, "notes", "bob-tab")).status_code == 204
    again = await alice.patch(phone, {"changes": {"notes": "x"}}, key)
    assert (again.status_code, again.json()) == (423, first.json())
    assert (await alice.case(phone))["notes"] == ""


async def test_bad_idempotency_key_is_422(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.patch(
        world.cases["phone"], {"changes": {"notes": "x"}}, {"Idempotency-Key": "k" * 129}
    )
    assert_error(response, 422, "validation_error", "Idempotency-Key")
    assert (await alice.case(world.cases["phone"]))["version"] == 1


async def test_429_is_not_remembered(db_url: str, world: World) -> None:
    async with other_app(db_url, rate_limit_writes="1/second") as http:
        csrf = await login(http, "alice@example.com")
        url = f"/api/cases/{world.cases['phone']}"
        assert (
            await http.patch(url, json={"changes": {"notes": "a"}}, headers=csrf)
        ).status_code == 200
        key = {**csrf, "Idempotency-Key": "limited"}
        limited = await http.patch(url, json={"changes": {"notes": "b"}}, headers=key)
        assert_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        await asyncio.sleep(1.1)
        retried = await http.patch(url, json={"changes": {"notes": "b"}}, headers=key)
        assert retried.status_code == 200, retried.text
        assert retried.json()["notes"] == "b"


# -- delete ------------------------------------------------------------------------------------


async def test_delete(as_user: As, world: World) -> None:
    alice, dave, carol = await as_user("alice"), await as_user("dave"), await as_user("carol")
    phone = world.cases["phone"]
    assert_error(await alice.delete(phone), 403, "forbidden")
    assert_error(await carol.delete(phone), 403, "forbidden")
    assert (await alice.case(phone))["id"] == phone
    response = await dave.delete(phone)
    assert response.status_code == 204
    assert response.content == b""
    for browser in (alice, dave):
        assert_error(await browser.get(f"/api/cases/{phone}"), 404, "not_found")
        snapshot = (await browser.get(f"/api/branches/{world.branches['downtown']}/cases")).json()
        assert [case["id"] for case in snapshot["cases"]] == [world.cases["laptop"]]
        assert snapshot["last_event_id"] == "3"
    assert_error(await alice.patch(phone, {"changes": {"notes": "x"}}), 404, "not_found")
    assert_error(await dave.delete(phone), 404, "not_found")
    assert_error(await dave.get(f"/api/cases/{phone}/history"), 404, "not_found")
    assert_error(await alice.lock(phone, "notes", "tab"), 404, "not_found")


async def test_manager_of_another_branch_cannot_delete(as_user: As, world: World) -> None:
    dave = await as_user("dave")  # manager downtown only
    assert_error(await dave.delete(world.cases["airport"]), 404, "not_found")


# -- locks meet PATCH --------------------------------------------------------------------------


async def test_patch_with_own_lock_and_token(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    token = (await alice.lock(phone, "notes", "tab-a")).json()["lock"]["token"]
    tab = {"X-Client-Id": "tab-a"}
    ok = await alice.patch(phone, {"changes": {"notes": "a"}, "lock_tokens": {"notes": token}}, tab)
    assert ok.status_code == 200, ok.text
    # The owner may also save without sending the token.
    assert (await alice.patch(phone, {"changes": {"notes": "b"}}, tab)).status_code == 200
    # Another tab of the same user is another owner.
    other = await alice.patch(phone, {"changes": {"notes": "c"}}, {"X-Client-Id": "tab-b"})
    assert_error(other, 423, "locked")
    # Unlocked fields are last-write-wins for anyone.
    bob = await as_user("bob")
    assert (await bob.patch(phone, {"changes": {"status": "ready"}})).status_code == 200


async def test_patch_of_a_field_locked_by_another_is_423(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    before = await state(alice, world, phone)
    response = await alice.patch(
        phone, {"changes": {"notes": "x", "status": "ready"}}, {"X-Client-Id": "alice-tab"}
    )
    body = assert_error(response, 423, "locked")
    lock = body["lock"]
    assert lock["case_id"] == phone and lock["field"] == "notes"
    assert lock["user"] == {"id": world.users["bob"], "name": "Bob Smith"}
    assert lock["client_id"] is None  # Bob's tab ids are his own business
    assert "expires_at" in lock and "token" not in lock
    assert "Bob Smith" in body["message"]
    assert await state(alice, world, phone) == before


async def test_bad_client_id_on_patch_is_422(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    for bad in ("", "x" * 65, "has space", "semi;colon"):
        response = await alice.patch(
            world.cases["phone"], {"changes": {"notes": "x"}}, {"X-Client-Id": bad}
        )
        assert_error(response, 422, "validation_error", "X-Client-Id")


# -- the PATCH answer order (docs/protocol.md, "PATCH"), one test per adjacent pair ---------


HUGE = b'{"changes": {"notes": "' + b"x" * (70 * 1024) + b'"}}'


async def test_order_401_before_403(client: httpx.AsyncClient, world: World) -> None:
    response = await client.patch(
        f"/api/cases/{world.cases['phone']}",
        content=HUGE,
        headers={
            "X-CSRF-Token": "bad",
            "Origin": "https://evil.example",
            "Content-Type": "text/plain",
        },
    )
    assert_error(response, 401, "not_authenticated")
    response = await client.patch(
        "/api/cases/999999", json={"changes": {"notes": "x"}}, headers={"X-CSRF-Token": "bad"}
    )
    assert_error(response, 401, "not_authenticated")


async def test_order_403_csrf_before_413(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.http.patch(
        f"/api/cases/{world.cases['phone']}",
        content=HUGE,
        headers={"X-CSRF-Token": "bad", "Content-Type": "text/plain"},
    )
    assert_error(response, 403, "csrf_failed")
    response = await alice.http.patch(
        f"/api/cases/{world.cases['phone']}",
        content=HUGE,
        headers={**alice.csrf, "Origin": "https://evil.example", **JSON},
    )
    assert_error(response, 403, "csrf_failed")


async def test_order_413_before_415(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.patch_raw(world.cases["phone"], HUGE, {"Content-Type": "text/plain"})
    assert_error(response, 413, "payload_too_large")


async def test_order_415_before_404(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    for case_id in (999999, world.cases["phone"]):
        response = await alice.patch_raw(case_id, b"{}", {"Content-Type": "text/plain"})
        assert_error(response, 415, "unsupported_media_type")
    bob = await as_user("bob")
    response = await bob.patch_raw(world.cases["airport"], b"{}", {"Content-Type": "text/plain"})
    assert_error(response, 415, "unsupported_media_type")


async def test_order_404_before_viewer_403(as_user: As, world: World) -> None:
    carol = await as_user("carol")  # viewer downtown
    for case_id in (999999, world.cases["airport"]):
        assert_error(await carol.patch(case_id, {"changes": {"notes": "x"}}), 404, "not_found")


async def test_order_viewer_403_before_rate_limit_and_json(db_url: str, world: World) -> None:
    async with other_app(db_url, rate_limit_writes="1/minute") as http:
        csrf = await login(http, "carol@example.com")
        url = f"/api/cases/{world.cases['phone']}"
        for _ in range(3):  # refusals do not use up the allowance either way
            response = await http.patch(url, content=b"{", headers={**csrf, **JSON})
            assert_error(response, 403, "forbidden")


async def test_order_rate_limit_before_idempotency_and_json(db_url: str, world: World) -> None:
    async with other_app(db_url, rate_limit_writes="1/minute") as http:
        csrf = await login(http, "alice@example.com")
        url = f"/api/cases/{world.cases['phone']}"
        key = {"Idempotency-Key": "k1"}
        first = await http.patch(url, json={"changes": {"notes": "a"}}, headers={**csrf, **key})
        assert first.status_code == 200
        replay = await http.patch(url, json={"changes": {"notes": "a"}}, headers={**csrf, **key})
        assert_error(replay, 429, "rate_limited")
        assert "retry-after" in replay.headers
        broken = await http.patch(url, content=b"{", headers={**csrf, **JSON})
        assert_error(broken, 429, "rate_limited")
        # 404 comes before the rate limit.
        assert_error(
            await http.patch("/api/cases/999999", json={"changes": {}}, headers=csrf),
            404,
            "not_found",
        )


async def test_order_idempotent_replay_before_everything_after_it(
    as_user: As, world: World
) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "first", "X-Client-Id": "alice-tab"}
    first = await alice.patch(phone, {"changes": {"notes": "a"}}, key)
    assert first.status_code == 200
    # Now the field is locked by someone else: the replay still gets the first answer.
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    again = await alice.patch(phone, {"changes": {"notes": "a"}}, key)
    assert (again.status_code, again.json()) == (200, first.json())
    assert again.headers.get("idempotent-replayed") == "true"


async def test_order_invalid_json_before_validation(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.patch_raw(world.cases["phone"], b'{"changes": {"colour": 1}', JSON)
    assert_error(response, 422, "invalid_json")


async def test_order_validation_422_before_lock_423(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    assert (await bob.lock(phone, "status", "bob-tab")).status_code == 200
    # The locked field itself has an invalid value.
    response = await alice.patch(phone, {"changes": {"status": "bogus"}})
    assert_error(response, 422, "validation_error", "status")
    # Another field in the same request is invalid.
    response = await alice.patch(phone, {"changes": {"notes": "ok", "priority": "bogus"}})
    assert_error(response, 422, "validation_error", "priority")
    # An `expected` entry for a field not being changed.
    response = await alice.patch(
        phone, {"changes": {"notes": "ok"}, "expected": {"product": "iPhone 14"}}
    )
    assert_error(response, 422, "validation_error", "product")


async def test_order_lock_423_before_lock_lost_409(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    tab = {"X-Client-Id": "alice-tab"}
    old = (await alice.lock(phone, "status", "alice-tab")).json()["lock"]["token"]
    assert (await alice.unlock(phone, "status", "alice-tab")).status_code == 204
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    response = await alice.patch(
        phone, {"changes": {"notes": "x", "status": "ready"}, "lock_tokens": {"status": old}}, tab
    )
    assert_error(response, 423, "locked")


async def test_order_lock_423_before_conflict_409(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    response = await alice.patch(
        phone, {"changes": {"notes": "x"}, "expected": {"notes": "stale"}}, {"X-Client-Id": "a"}
    )
    assert_error(response, 423, "locked")


async def test_order_lock_lost_409_before_conflict_409(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    tab = {"X-Client-Id": "alice-tab"}
    old = (await alice.lock(phone, "notes", "alice-tab")).json()["lock"]["token"]
    assert (await alice.unlock(phone, "notes", "alice-tab")).status_code == 204
    before = await state(alice, world, phone)
    response = await alice.patch(
        phone,
        {"changes": {"notes": "x"}, "expected": {"notes": "stale"}, "lock_tokens": {"notes": old}},
        tab,
    )
    body = assert_error(response, 409, "lock_lost")
    assert body["field"] == "notes"
    assert await state(alice, world, phone) == before


async def test_stale_lock_token_is_409_lock_lost(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    tab = {"X-Client-Id": "alice-tab"}
    old = (await alice.lock(phone, "notes", "alice-tab")).json()["lock"]["token"]
    assert (await alice.unlock(phone, "notes", "alice-tab")).status_code == 204
    body = {"changes": {"notes": "late"}, "lock_tokens": {"notes": old}}
    assert_error(await alice.patch(phone, body, tab), 409, "lock_lost", "notes")
    # Re-acquired: a new token; the old one is still refused.
    new = (await alice.lock(phone, "notes", "alice-tab")).json()["lock"]["token"]
    assert new != old
    assert_error(await alice.patch(phone, body, tab), 409, "lock_lost", "notes")
    # Without a client id the caller owns nothing: its own lock blocks it.
    assert_error(await alice.patch(phone, {"changes": {"notes": "x"}}), 423, "locked")
    # A token from the wrong owner: bob sends alice's token for a field she holds.
    response = await bob.patch(
        phone,
        {"changes": {"notes": "x"}, "lock_tokens": {"notes": new}},
        {"X-Client-Id": "alice-tab"},
    )
    assert_error(response, 423, "locked")
    ok = await alice.patch(phone, {"changes": {"notes": "ok"}, "lock_tokens": {"notes": new}}, tab)
    assert ok.status_code == 200, ok.text
    assert (await alice.case(phone))["notes"] == "ok"


async def test_lock_token_for_an_unlocked_field_is_lock_lost(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.patch(
        world.cases["phone"],
        {"changes": {"notes": "x"}, "lock_tokens": {"notes": "never-issued"}},
        {"X-Client-Id": "tab"},
    )
    assert_error(response, 409, "lock_lost", "notes")


async def test_patch_without_client_id_of_a_field_locked_from_own_tab_is_423(
    as_user: As, world: World
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    assert (await alice.lock(phone, "notes", "alice-tab")).status_code == 200
    body = assert_error(await alice.patch(phone, {"changes": {"notes": "x"}}), 423, "locked")
    assert body["lock"]["user"]["id"] == world.users["alice"]
    assert body["lock"]["client_id"] == "alice-tab"


async def test_new_member_can_be_assigned(as_user: As, services: Services, world: World) -> None:
    alice = await as_user("alice")
    frank = await make_user(services.db, email="frank@example.com", name="Frank")
    response = await alice.patch(world.cases["phone"], {"changes": {"assignee_id": frank}})
    assert_error(response, 422, "validation_error", "assignee_id")
    await add_member(
        services.db, user_id=frank, branch_id=world.branches["downtown"], role=Role.editor
    )
    response = await alice.patch(world.cases["phone"], {"changes": {"assignee_id": frank}})
    assert response.status_code == 200, response.text


async def _by_id(alice: Browser, raw_id: str) -> list[httpx.Response]:
    return [
        await alice.get(f"/api/cases/{raw_id}"),
        await alice.get(f"/api/cases/{raw_id}/history"),
        await alice.get(f"/api/branches/{raw_id}/cases"),
        await alice.http.patch(
            f"/api/cases/{raw_id}", json={"changes": {"notes": "x"}}, headers=alice.csrf
        ),
        await alice.http.put(
            f"/api/cases/{raw_id}/locks/notes", headers={**alice.csrf, "X-Client-Id": "tab"}
        ),
        await alice.http.post(
            f"/api/branches/{raw_id}/cases", json={"customer_name": "X"}, headers=alice.csrf
        ),
    ]


@pytest.mark.parametrize("bad_id", ["0", "00", str(2**31), "9" * 18])
async def test_out_of_range_ids_are_404_not_500(as_user: As, world: World, bad_id: str) -> None:
    alice = await as_user("alice")
    for response in await _by_id(alice, bad_id):
        assert_error(response, 404, "not_found")


@pytest.mark.parametrize("bad_id", ["-1", "+1", str(2**63), "1" + "0" * 20])
async def test_ids_that_are_not_1_to_18_ascii_digits_are_422(
    as_user: As, world: World, bad_id: str
) -> None:
    alice = await as_user("alice")
    for response in await _by_id(alice, bad_id):
        assert_error(response, 422, "validation_error")


async def test_history_before_out_of_range_is_422(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.get(
        f"/api/cases/{world.cases['phone']}/history", params={"before": str(10**20)}
    )
    assert_error(response, 422, "validation_error")


async def test_concurrent_twins_with_one_key_commit_once(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "twins"}
    body = {"changes": {"notes": "once"}}
    answers = await asyncio.gather(*(alice.patch(phone, body, key) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1
    assert (await alice.case(phone))["version"] == 2
    assert [row["new"] for row in await alice.history(phone)].count("once") == 1


async def test_concurrent_twins_fenced_by_expected_all_get_the_first_answer(
    as_user: As, world: World
) -> None:
    """A twin that waited for the first one's commit finds ``expected`` stale.

    Its 409 is not its answer: the key already has one (the first twin's 200),
    and a retry gets the first answer again (docs/protocol.md, PATCH).
    """
    alice = await as_user("alice")
    phone = world.cases["phone"]
    key = {"Idempotency-Key": "fenced-twins"}
    body = {"changes": {"notes": "once"}, "expected": {"notes": ""}}
    answers = await asyncio.gather(*(alice.patch(phone, body, key) for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert len({a.text for a in answers}) == 1
    assert (await alice.case(phone))["version"] == 2


async def test_lock_backend_down(
    as_user: As, services: Services, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lock checks cannot run: locks answer 503; a PATCH needs `expected` for every field."""
    from warrantysync.errors import Unavailable

    async def down(*_args: Any, **_kwargs: Any) -> Any:
        raise Unavailable("redis is down")

    backend = services.locks.backend
    for method in ("acquire", "get_many", "get", "release"):
        monkeypatch.setattr(backend, method, down)
    alice = await as_user("alice")
    phone = world.cases["phone"]
    response = await alice.lock(phone, "notes", "tab")
    assert_error(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) >= 1
    response = await alice.patch(phone, {"changes": {"notes": "x", "status": "ready"}})
    assert_error(response, 503, "unavailable")
    assert int(response.headers["retry-after"]) >= 1
    response = await alice.patch(
        phone, {"changes": {"notes": "x", "status": "ready"}, "expected": {"notes": ""}}
    )
    assert_error(response, 503, "unavailable")
    assert (await alice.case(phone))["version"] == 1
    response = await alice.patch(
        phone,
        {"changes": {"notes": "x", "status": "ready"}, "expected": {"notes": "", "status": "new"}},
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    # Still fenced by the storage: a stale `expected` is a conflict.
    response = await alice.patch(phone, {"changes": {"notes": "y"}, "expected": {"notes": ""}})
    assert_error(response, 409, "conflict")
