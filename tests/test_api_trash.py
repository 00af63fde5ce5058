"""The trash through the ASGI app: list, restore, purge (docs/protocol.md, "Trash").

A deleted case stays in the trash, with its number and history, for
``TRASH_RETENTION_DAYS``; managers list and restore; the purge then removes
it for good, and only one node purges (the race itself, on PostgreSQL and
with real server processes, is in tests/test_trash_cluster.py).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from sqlalchemy import func, select, update

import test_api_cases
from factories import World, add_member, make_case, make_user
from test_api_cases import As, Browser, assert_error
from warrantysync import Settings
from warrantysync.container import Services
from warrantysync.jsonutil import loads
from warrantysync.services.trash import Trash
from warrantysync.storage.models import (
    AuditEntry,
    Lease,
    OutboxEvent,
    Role,
    WarrantyCase,
    utcnow,
)

as_user = test_api_cases.as_user
DAY = dt.timedelta(days=1)


async def trash_of(browser: Browser, branch_id: int) -> dict[str, Any]:
    answer = await browser.get(f"/api/branches/{branch_id}/trash")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def undelete(browser: Browser, case_id: int, **headers: str) -> httpx.Response:
    return await browser.http.post(
        f"/api/cases/{case_id}/restore", headers={**browser.csrf, **headers}
    )


async def deleted_at(services: Services, case_id: int, when: dt.datetime) -> None:
    """Pretend the case was deleted at ``when``."""
    async with services.db.write() as session:
        await session.execute(
            update(WarrantyCase).where(WarrantyCase.id == case_id).values(deleted_at=when)
        )


async def rows_of(services: Services, case_id: int) -> tuple[int, int]:
    """(case rows, audit rows) left for ``case_id``."""
    async with services.db.read() as session:
        cases = await session.scalar(
            select(func.count()).select_from(WarrantyCase).where(WarrantyCase.id == case_id)
        )
        audit = await session.scalar(
            select(func.count()).select_from(AuditEntry).where(AuditEntry.case_id == case_id)
        )
    return int(cases or 0), int(audit or 0)


async def test_managers_see_the_branchs_deleted_cases_with_who_and_when(
    as_user: As, world: World, client: httpx.AsyncClient
) -> None:
    dave = await as_user("dave")
    downtown = world.branches["downtown"]
    assert await trash_of(dave, downtown) == {"cases": [], "total": 0, "retention_days": 30}
    phone = await dave.case(world.cases["phone"])
    assert (await dave.delete(phone["id"])).status_code == 204
    assert (await dave.delete(world.cases["laptop"])).status_code == 204

    trash = await trash_of(dave, downtown)
    assert trash["total"] == 2
    assert [case["id"] for case in trash["cases"]] == [world.cases["laptop"], phone["id"]]
    entry = trash["cases"][1]
    assert entry["case_number"] == phone["case_number"]
    assert entry["customer_name"] == "John Smith"
    assert entry["deleted_by"] == {"id": world.users["dave"], "name": "Dave Kim"}
    deleted = dt.datetime.fromisoformat(entry["deleted_at"])
    assert dt.datetime.fromisoformat(entry["purge_at"]) - deleted == 30 * DAY
    assert abs(deleted.replace(tzinfo=None) - utcnow()) < dt.timedelta(minutes=1)
    one = (await dave.get(f"/api/branches/{downtown}/trash", params={"limit": 1})).json()
    assert [case["id"] for case in one["cases"]] == [world.cases["laptop"]]
    assert one["total"] == 2

    # Editors and viewers of the branch may not look; others do not see the branch at all.
    for who in ("alice", "carol"):
        refused = await (await as_user(who)).get(f"/api/branches/{downtown}/trash")
        assert_error(refused, 403, "forbidden")
    assert_error(
        await (await as_user("erin")).get(f"/api/branches/{downtown}/trash"), 404, "not_found"
    )
    assert_error(await client.get(f"/api/branches/{downtown}/trash"), 401, "not_authenticated")
    for bad in ({"limit": 0}, {"limit": 1001}):
        answer = await dave.get(f"/api/branches/{downtown}/trash", params=bad)
        assert_error(answer, 422, "validation_error")


async def test_a_restored_case_is_back_with_its_number_and_history(
    as_user: As, world: World, services: Services
) -> None:
    alice, dave = await as_user("alice"), await as_user("dave")
    downtown, phone = world.branches["downtown"], world.cases["phone"]
    await alice.patch(phone, {"changes": {"notes": "screen cracked"}})
    before = await alice.case(phone)
    history = await alice.history(phone)
    assert (await dave.delete(phone)).status_code == 204

    answer = await undelete(dave, phone)
    assert answer.status_code == 200, answer.text
    case = answer.json()
    assert case == {
        **before,
        "version": before["version"] + 2,
        "updated_at": case["updated_at"],
        "updated_by": world.users["dave"],
    }
    assert await alice.case(phone) == case
    snapshot = (await alice.get(f"/api/branches/{downtown}/cases")).json()
    assert phone in [row["id"] for row in snapshot["cases"]]
    assert (await trash_of(dave, downtown))["cases"] == []

    # The history is whole: everything before, then the deletion and the restore, by Dave.
    after = await alice.history(phone)
    assert after[2:] == history
    restored, deleted = after[0], after[1]
    assert (deleted["field"], deleted["old"], deleted["new"]) == ("deleted", False, True)
    assert (restored["field"], restored["old"], restored["new"]) == ("deleted", True, False)
    for row in (restored, deleted):
        assert row["user"] == {"id": world.users["dave"], "name": "Dave Kim"}
    assert restored["version"] == case["version"]

    # Every open tab learns of it as of a new case, marked, so older clients show it too.
    async with services.db.read() as session:
        event = await session.scalar(
            select(OutboxEvent)
            .where(OutboxEvent.branch_id == downtown)
            .order_by(OutboxEvent.id.desc())
        )
    assert event is not None and event.kind == "case-created"
    data = loads(event.data)
    assert data["case"] == case
    assert data["restored"] is True
    assert data["by"] == {"id": world.users["dave"], "name": "Dave Kim"}
    assert str(event.id) == snapshot["last_event_id"]


async def test_only_a_manager_of_the_branch_restores_and_only_from_the_trash(
    as_user: As, world: World, client: httpx.AsyncClient, services: Services
) -> None:
    alice, carol, dave = await as_user("alice"), await as_user("carol"), await as_user("dave")
    phone, airport = world.cases["phone"], world.cases["airport"]
    # Not in the trash: a live case, a missing one.
    assert_error(await undelete(dave, phone), 404, "not_found")
    assert_error(await undelete(dave, 999_999), 404, "not_found")
    assert (await dave.delete(phone)).status_code == 204
    assert_error(await client.post(f"/api/cases/{phone}/restore"), 401, "not_authenticated")
    assert_error(await dave.http.post(f"/api/cases/{phone}/restore"), 403, "csrf_failed")
    for editor_or_viewer in (alice, carol):
        assert_error(await undelete(editor_or_viewer, phone), 403, "forbidden")
    assert (await undelete(dave, phone)).status_code == 200
    assert_error(await undelete(dave, phone), 404, "not_found")  # already back

    # A manager of another branch does not see the case, nor that branch's trash.
    mona = await make_user(services.db, email="mona@example.com", name="Mona Park")
    await add_member(
        services.db, user_id=mona, branch_id=world.branches["airport"], role=Role.manager
    )
    airport_manager = await as_user("mona")
    assert (await airport_manager.delete(airport)).status_code == 204
    assert_error(await undelete(dave, airport), 404, "not_found")
    refused = await dave.get(f"/api/branches/{world.branches['airport']}/trash")
    assert_error(refused, 404, "not_found")
    assert (await undelete(airport_manager, airport)).status_code == 200


async def test_a_retried_restore_gets_its_first_answer(as_user: As, world: World) -> None:
    dave = await as_user("dave")
    phone = world.cases["phone"]
    assert (await dave.delete(phone)).status_code == 204
    first = await undelete(dave, phone, **{"Idempotency-Key": "undelete-1"})
    assert first.status_code == 200, first.text
    again = await undelete(dave, phone, **{"Idempotency-Key": "undelete-1"})
    assert again.status_code == 200
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert len([row for row in await dave.history(phone) if row["field"] == "deleted"]) == 2


async def test_the_purge_removes_only_cases_deleted_longer_than_the_retention_ago(
    as_user: As, world: World, services: Services
) -> None:
    dave = await as_user("dave")
    phone, laptop, airport = world.cases["phone"], world.cases["laptop"], world.cases["airport"]
    for case_id in (phone, laptop):
        assert (await dave.delete(case_id)).status_code == 204
    now = utcnow()
    await deleted_at(services, phone, now - 31 * DAY)
    await deleted_at(services, laptop, now - 29 * DAY)
    assert (await rows_of(services, phone))[1] > 0

    assert await services.trash.purge(now=now) == 1
    assert await rows_of(services, phone) == (0, 0)
    assert (await rows_of(services, laptop))[0] == 1
    assert (await rows_of(services, airport))[0] == 1
    trash = await trash_of(dave, world.branches["downtown"])
    assert [case["id"] for case in trash["cases"]] == [laptop]
    assert_error(await undelete(dave, phone), 404, "not_found")
    assert await services.trash.purge(now=now) == 0  # nothing twice

    # A day later the laptop's time has come too.
    assert await services.trash.purge(now=now + 2 * DAY) == 1
    assert await rows_of(services, laptop) == (0, 0)
    text = services.metrics.render().decode()
    assert "warrantysync_cases_purged_total 2.0" in text


async def test_the_purge_drops_older_events_from_the_front_of_the_log(
    as_user: As, world: World, services: Services
) -> None:
    """Events name the purged case and its values: those older than the retention go too."""
    dave = await as_user("dave")
    downtown = world.branches["downtown"]
    assert (await dave.delete(world.cases["phone"])).status_code == 204
    await dave.patch(world.cases["laptop"], {"changes": {"notes": "recent"}})
    async with services.db.read() as session:
        ids = list(
            (
                await session.scalars(
                    select(OutboxEvent.id)
                    .where(OutboxEvent.branch_id == downtown)
                    .order_by(OutboxEvent.id)
                )
            ).all()
        )
    assert len(ids) >= 4
    now = utcnow()
    old = ids[:-1]
    async with services.db.write() as session:
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.branch_id == downtown, OutboxEvent.id.in_(old))
            .values(created_at=now - 40 * DAY)
        )
    await deleted_at(services, world.cases["phone"], now - 31 * DAY)
    assert await services.trash.purge(now=now) == 1
    async with services.db.read() as session:
        kept = list(
            (
                await session.scalars(
                    select(OutboxEvent.id).where(OutboxEvent.branch_id == downtown)
                )
            ).all()
        )
    assert kept == ids[-1:]
    # The log still ends where it did; a tab that missed more resynchronises.
    snapshot = (await dave.get(f"/api/branches/{downtown}/cases")).json()
    assert snapshot["last_event_id"] == str(ids[-1])


async def test_a_case_restored_in_time_is_not_purged(
    as_user: As, world: World, services: Services
) -> None:
    dave = await as_user("dave")
    phone = world.cases["phone"]
    assert (await dave.delete(phone)).status_code == 204
    await deleted_at(services, phone, utcnow() - 29 * DAY)
    assert (await undelete(dave, phone)).status_code == 200
    assert await services.trash.purge(now=utcnow() + 10 * DAY) == 0
    assert (await dave.case(phone))["id"] == phone


async def test_one_lease_holder_purges_per_round(services: Services, world: World) -> None:
    """Two nodes' purge jobs: the one holding the lease purges, the other skips the round."""
    by = world.users["dave"]
    downtown = world.branches["downtown"]
    ids = [await make_case(services.db, branch_id=downtown, by=by) for _ in range(3)]
    async with services.db.write() as session:
        await session.execute(
            update(WarrantyCase)
            .where(WarrantyCase.id.in_(ids))
            .values(deleted_at=utcnow() - 31 * DAY)
        )
    # A round lasts an hour: however slow the machine, node-a's lease holds until it lapses.
    first = Trash(services.db, retention_days=30, purge_interval=3600, holder="node-a")
    second = Trash(services.db, retention_days=30, purge_interval=3600, holder="node-b")
    assert await first.purge_if_leader() == 3
    assert await second.purge_if_leader() is None  # node-a's round
    assert await first.purge_if_leader() == 0  # its own lease: renewed
    async with services.db.write() as session:  # the hour has passed
        await session.execute(update(Lease).values(expires_at=utcnow() - dt.timedelta(seconds=1)))
    assert await second.purge_if_leader() == 0  # lapsed: node-b's turn now
    assert await first.purge_if_leader() is None


@pytest.mark.parametrize("days", ["0", "-1", "x"])
def test_the_retention_must_be_a_positive_number_of_days(days: str) -> None:
    with pytest.raises(ValidationError):
        Settings(secret_key="k", trash_retention_days=days)  # type: ignore[arg-type]
