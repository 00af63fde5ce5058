"""Restoring a value from a case's history (docs/protocol.md, "Second chances").

``POST /api/cases/{cid}/history/{entry_id}/restore {"expected": …}`` is a
change like any PATCH: the same rules, locks and conflict check, one version,
audit rows by the person who restored (marked ``restored_from``), and a
``case-updated`` event.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from sqlalchemy import select

import test_api_cases
from factories import World, add_member, make_user
from test_api_cases import JSON, As, Browser, assert_error, state
from warrantysync.container import Services
from warrantysync.jsonutil import loads
from warrantysync.storage.models import Membership, OutboxEvent, Role

as_user = test_api_cases.as_user


async def restore(
    browser: Browser,
    case_id: int,
    entry_id: int,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    raw = json.dumps({} if body is None else body).encode()
    return await browser.http.post(
        f"/api/cases/{case_id}/history/{entry_id}/restore",
        content=raw,
        headers={**JSON, **browser.csrf, **(headers or {})},
    )


async def entry_of(browser: Browser, case_id: int, field: str, new: Any) -> dict[str, Any]:
    """The newest history entry that set ``field`` to ``new``."""
    for row in await browser.history(case_id):
        if row["field"] == field and row["new"] == new:
            return row
    raise AssertionError(f"no entry set {field} to {new!r}")


async def last_event(services: Services, branch_id: int) -> tuple[str, dict[str, Any]]:
    async with services.db.read() as session:
        event = await session.scalar(
            select(OutboxEvent)
            .where(OutboxEvent.branch_id == branch_id)
            .order_by(OutboxEvent.id.desc())
            .limit(1)
        )
    assert event is not None
    return event.kind, loads(event.data)


async def test_a_value_from_history_comes_back_as_a_change_marked_a_restore(
    as_user: As, world: World, services: Services
) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    created = await entry_of(alice, phone, "product", "iPhone 14")
    assert created["restored_from"] is None
    changed = await bob.patch(phone, {"changes": {"product": "Pixel 9"}})
    assert changed.status_code == 200, changed.text

    answer = await restore(alice, phone, created["id"], {"expected": "Pixel 9"})
    assert answer.status_code == 200, answer.text
    case = answer.json()
    assert case["product"] == "iPhone 14"
    assert case["version"] == changed.json()["version"] + 1
    assert case["updated_by"] == world.users["alice"]
    assert await alice.case(phone) == case

    newest = (await alice.history(phone))[0]
    assert (newest["field"], newest["old"], newest["new"]) == ("product", "Pixel 9", "iPhone 14")
    assert newest["user"] == {"id": world.users["alice"], "name": "Alice Johnson"}
    assert newest["restored_from"] == created["id"]
    assert newest["version"] == case["version"]

    kind, data = await last_event(services, world.branches["downtown"])
    assert kind == "case-updated"
    assert data["changes"] == {"product": "iPhone 14"}
    assert data["restored_from"] == created["id"]
    assert data["by"] == {"id": world.users["alice"], "name": "Alice Johnson"}


async def test_a_value_changed_since_is_a_conflict_and_may_then_be_restored_anyway(
    as_user: As, world: World
) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    await alice.patch(phone, {"changes": {"status": "ready"}})
    entry = await entry_of(alice, phone, "status", "ready")
    await bob.patch(phone, {"changes": {"status": "closed"}})  # after Alice looked
    before = await state(alice, world, phone)

    refused = await restore(alice, phone, entry["id"], {"expected": "ready", "side": "old"})
    body = assert_error(refused, 409, "conflict")
    assert body["current"] == {"status": "closed"}
    assert body["by"] == {"id": world.users["bob"], "name": "Bob Smith"}
    assert await state(alice, world, phone) == before

    anyway = await restore(alice, phone, entry["id"], {"expected": "closed", "side": "old"})
    assert anyway.status_code == 200, anyway.text
    assert anyway.json()["status"] == "new"


async def test_the_old_side_brings_back_a_default_the_case_was_created_with(
    as_user: As, world: World
) -> None:
    """Defaults (status "new", empty notes) have no entry of their own: only an `old` holds them."""
    alice = await as_user("alice")
    phone = world.cases["phone"]
    await alice.patch(phone, {"changes": {"notes": "wrong case!", "priority": "urgent"}})
    entry = await entry_of(alice, phone, "notes", "wrong case!")
    answer = await restore(alice, phone, entry["id"], {"expected": "wrong case!", "side": "old"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["notes"] == ""
    assert answer.json()["priority"] == "urgent"  # one field, the entry's
    newest = (await alice.history(phone))[0]
    assert (newest["field"], newest["new"], newest["restored_from"]) == ("notes", "", entry["id"])

    created = await entry_of(alice, phone, "product", "iPhone 14")
    before = await state(alice, world, phone)
    refused = await restore(alice, phone, created["id"], {"side": "old"})
    body = assert_error(refused, 422, "validation_error", field="side")
    assert body["rule"] == "no_earlier_value"
    assert await state(alice, world, phone) == before


async def test_without_expected_a_restore_is_last_write_wins(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    entry = await entry_of(alice, phone, "customer_name", "John Smith")
    await bob.patch(phone, {"changes": {"customer_name": "Jon Smyth"}})
    answer = await restore(alice, phone, entry["id"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["customer_name"] == "John Smith"


async def test_restoring_the_current_value_changes_nothing(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    entry = await entry_of(alice, phone, "product", "iPhone 14")
    before = await state(alice, world, phone)
    answer = await restore(alice, phone, entry["id"], {"expected": "iPhone 14"})
    assert answer.status_code == 200, answer.text
    assert await state(alice, world, phone) == before


async def test_who_may_restore(as_user: As, world: World, client: httpx.AsyncClient) -> None:
    alice, carol, dave = await as_user("alice"), await as_user("carol"), await as_user("dave")
    phone, airport = world.cases["phone"], world.cases["airport"]
    entry = await entry_of(alice, phone, "product", "iPhone 14")
    await alice.patch(phone, {"changes": {"product": "Other"}})
    before = await state(alice, world, phone)

    anonymous = await client.post(f"/api/cases/{phone}/history/{entry['id']}/restore", json={})
    assert_error(anonymous, 401, "not_authenticated")
    no_csrf = await alice.http.post(
        f"/api/cases/{phone}/history/{entry['id']}/restore", json={"expected": "Other"}
    )
    assert_error(no_csrf, 403, "csrf_failed")
    assert_error(await restore(carol, phone, entry["id"], {"expected": "Other"}), 403, "forbidden")
    # Dave manages Downtown only: the Airport case does not exist for him.
    airport_entry = (await (await as_user("erin")).history(airport))[0]
    missing = await restore(dave, airport, airport_entry["id"], {})
    assert_error(missing, 404, "not_found")
    assert await state(alice, world, phone) == before

    by_manager = await restore(dave, phone, entry["id"], {"expected": "Other"})
    assert by_manager.status_code == 200, by_manager.text


async def test_entries_that_hold_no_field_value_are_read_only(as_user: As, world: World) -> None:
    alice, dave = await as_user("alice"), await as_user("dave")
    phone = world.cases["phone"]
    assert (await dave.delete(phone)).status_code == 204
    restored = await dave.http.post(f"/api/cases/{phone}/restore", headers=dave.csrf)
    assert restored.status_code == 200, restored.text
    deletion = await entry_of(alice, phone, "deleted", True)
    before = await state(alice, world, phone)
    for entry in (deletion, await entry_of(alice, phone, "deleted", False)):
        refused = await restore(alice, phone, entry["id"], {"expected": False})
        body = assert_error(refused, 422, "validation_error", field="deleted")
        assert body["rule"] == "read_only"
    assert await state(alice, world, phone) == before


async def test_a_deleted_case_and_foreign_or_unknown_entries_are_404(
    as_user: As, world: World
) -> None:
    alice, dave = await as_user("alice"), await as_user("dave")
    phone, laptop = world.cases["phone"], world.cases["laptop"]
    laptop_entry = await entry_of(alice, laptop, "product", "XPS 13")
    phone_entry = await entry_of(alice, phone, "product", "iPhone 14")
    before = await state(alice, world, phone)
    # An entry of another case, even one of the same branch, is not this case's.
    assert_error(await restore(alice, phone, laptop_entry["id"], {}), 404, "not_found")
    assert_error(await restore(alice, phone, 999_999, {}), 404, "not_found")
    assert_error(await restore(alice, phone, 0, {}), 404, "not_found")
    assert await state(alice, world, phone) == before

    assert (await dave.delete(phone)).status_code == 204
    assert_error(await restore(alice, phone, phone_entry["id"], {}), 404, "not_found")


@pytest.mark.parametrize(
    ("raw", "status", "code", "rule"),
    [
        (b'{"expected": "x", "changes": {}}', 422, "validation_error", "unknown_member"),
        (b'["expected"]', 422, "validation_error", "type"),
        (b"null", 422, "validation_error", "type"),
        (b'{"expected": ', 422, "invalid_json", None),
        (b'{"side": "older"}', 422, "validation_error", "choice"),
        (b'{"side": null}', 422, "validation_error", "choice"),
    ],
)
async def test_a_malformed_body_is_422_and_changes_nothing(
    as_user: As, world: World, raw: bytes, status: int, code: str, rule: str | None
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    await alice.patch(phone, {"changes": {"product": "Other"}})
    entry = await entry_of(alice, phone, "product", "iPhone 14")
    before = await state(alice, world, phone)
    answer = await alice.http.post(
        f"/api/cases/{phone}/history/{entry['id']}/restore",
        content=raw,
        headers={**JSON, **alice.csrf},
    )
    body = assert_error(answer, status, code)
    assert body.get("rule") == rule
    assert await state(alice, world, phone) == before


async def test_a_value_is_checked_by_todays_rules(
    as_user: As, world: World, services: Services
) -> None:
    """An assignee who has left the branch cannot be brought back."""
    alice = await as_user("alice")
    phone = world.cases["phone"]
    temp = await make_user(services.db, email="temp@example.com", name="Temp Worker")
    await add_member(
        services.db, user_id=temp, branch_id=world.branches["downtown"], role=Role.editor
    )
    await alice.patch(phone, {"changes": {"assignee_id": temp}})
    await alice.patch(phone, {"changes": {"assignee_id": None}})
    async with services.db.write() as session:
        await session.delete(await session.get(Membership, (temp, world.branches["downtown"])))
    entry = await entry_of(alice, phone, "assignee_id", temp)
    refused = await restore(alice, phone, entry["id"], {"expected": None})
    body = assert_error(refused, 422, "validation_error", field="assignee_id")
    assert body["rule"] == "member"


async def test_a_field_locked_by_someone_else_is_423(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    await alice.patch(phone, {"changes": {"notes": "first"}})
    await alice.patch(phone, {"changes": {"notes": "later"}})
    entry = await entry_of(alice, phone, "notes", "first")
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    before = await state(alice, world, phone)
    refused = await restore(alice, phone, entry["id"], {"expected": "later"}, {"X-Client-Id": "a"})
    body = assert_error(refused, 423, "locked")
    assert body["lock"]["user"]["name"] == "Bob Smith"
    assert await state(alice, world, phone) == before


async def test_a_retry_with_the_same_key_is_applied_once(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    await alice.patch(phone, {"changes": {"priority": "urgent"}})
    entry = await entry_of(alice, phone, "priority", "urgent")
    key = {"Idempotency-Key": "restore-1"}
    body = {"expected": "urgent", "side": "old"}
    first = await restore(alice, phone, entry["id"], body, key)
    assert first.status_code == 200, first.text
    assert first.json()["priority"] == "normal"
    history = await alice.history(phone)
    again = await restore(alice, phone, entry["id"], body, key)
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert await alice.history(phone) == history
    other = await restore(alice, phone, entry["id"], {"expected": "normal"}, key)
    assert_error(other, 422, "idempotency_key_reused")
