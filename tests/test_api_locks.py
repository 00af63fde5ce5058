"""Field locks over HTTP: PUT acquires or renews, DELETE releases (docs/protocol.md, "Locks")."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import login
from factories import World
from warrantysync.container import Services


@dataclass
class Browser:
    http: httpx.AsyncClient
    csrf: dict[str, str]

    async def lock(self, case_id: int, field: str, client_id: str | None) -> httpx.Response:
        headers = dict(self.csrf)
        if client_id is not None:
            headers["X-Client-Id"] = client_id
        return await self.http.put(f"/api/cases/{case_id}/locks/{field}", headers=headers)

    async def unlock(self, case_id: int, field: str, client_id: str | None) -> httpx.Response:
        headers = dict(self.csrf)
        if client_id is not None:
            headers["X-Client-Id"] = client_id
        return await self.http.delete(f"/api/cases/{case_id}/locks/{field}", headers=headers)

    async def locks(self, branch_id: int) -> list[dict[str, Any]]:
        response = await self.http.get(f"/api/branches/{branch_id}/cases")
        assert response.status_code == 200
        locks: list[dict[str, Any]] = response.json()["locks"]
        return locks


As = Callable[[str], Awaitable[Browser]]


@pytest.fixture
async def as_user(app_services: tuple[Any, Services], world: World) -> AsyncIterator[As]:
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


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_acquire_returns_the_lock_with_a_token(
    as_user: As, services: Services, world: World
) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    before = dt.datetime.now(dt.UTC)
    response = await alice.lock(phone, "notes", "tab-1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"lock"}
    lock = body["lock"]
    assert set(lock) == {
        "case_id",
        "field",
        "user",
        "client_id",
        "expires_at",
        "active_at",
        "token",
    }
    assert (lock["case_id"], lock["field"], lock["client_id"]) == (phone, "notes", "tab-1")
    assert lock["user"] == {"id": world.users["alice"], "name": "Alice Johnson"}
    assert isinstance(lock["token"], str) and len(lock["token"]) >= 16
    expires = parse_time(lock["expires_at"])
    ttl = services.settings.lock_ttl
    assert before + dt.timedelta(seconds=ttl - 2) <= expires
    assert expires <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ttl + 2)
    # Others see it in the snapshot, without the token and without her tab's id;
    # she sees her own client id.
    [public] = await (await as_user("bob")).locks(world.branches["downtown"])
    assert public == {**{k: v for k, v in lock.items() if k != "token"}, "client_id": None}
    [own] = await alice.locks(world.branches["downtown"])
    assert own == {k: v for k, v in lock.items() if k != "token"}


async def test_renew_by_the_same_owner_keeps_the_token(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    first = (await alice.lock(phone, "notes", "tab-1")).json()["lock"]
    second = await alice.lock(phone, "notes", "tab-1")
    assert second.status_code == 200
    renewed = second.json()["lock"]
    assert renewed["token"] == first["token"]
    assert parse_time(renewed["expires_at"]) >= parse_time(first["expires_at"])
    assert len(await alice.locks(world.branches["downtown"])) == 1


async def test_each_acquisition_gets_a_new_token(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    tokens = set()
    for _ in range(3):
        tokens.add((await alice.lock(phone, "notes", "tab-1")).json()["lock"]["token"])
        assert (await alice.unlock(phone, "notes", "tab-1")).status_code == 204
    assert len(tokens) == 3
    other = (await alice.lock(phone, "status", "tab-1")).json()["lock"]["token"]
    assert other not in tokens


async def test_locked_by_another_user_is_423(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    held = (await alice.lock(phone, "notes", "alice-tab")).json()["lock"]
    response = await bob.lock(phone, "notes", "bob-tab")
    body = assert_error(response, 423, "locked")
    assert set(body) == {"error", "message", "lock"}
    assert body["lock"] == {**{k: v for k, v in held.items() if k != "token"}, "client_id": None}
    assert "token" not in body["lock"]
    assert held["token"] not in response.text
    assert "Alice Johnson" in body["message"]
    # Another tab of the same user is another owner too (and is told which tab holds it).
    mine = assert_error(await alice.lock(phone, "notes", "alice-other-tab"), 423, "locked")
    assert mine["lock"]["client_id"] == "alice-tab"
    # Other fields and other cases are free.
    assert (await bob.lock(phone, "status", "bob-tab")).status_code == 200
    assert (await bob.lock(world.cases["laptop"], "notes", "bob-tab")).status_code == 200


async def test_release_by_owner_then_others_may_take_it(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    assert (await alice.lock(phone, "notes", "alice-tab")).status_code == 200
    response = await alice.unlock(phone, "notes", "alice-tab")
    assert response.status_code == 204
    assert response.content == b""
    assert await alice.locks(world.branches["downtown"]) == []
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    # Releasing a lock that is not there is fine.
    assert (await alice.unlock(phone, "status", "alice-tab")).status_code == 204


async def test_delete_by_a_non_owner_editor_is_403(as_user: As, world: World) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    phone = world.cases["phone"]
    assert (await alice.lock(phone, "notes", "alice-tab")).status_code == 200
    for client_id in ("bob-tab", "alice-tab", None):
        assert_error(await bob.unlock(phone, "notes", client_id), 403, "forbidden")
    # The owner from another tab, or without a tab, is not the owner either.
    assert_error(await alice.unlock(phone, "notes", "alice-other-tab"), 403, "forbidden")
    assert_error(await alice.unlock(phone, "notes", None), 403, "forbidden")
    [still] = await alice.locks(world.branches["downtown"])
    assert still["client_id"] == "alice-tab"


async def test_manager_force_releases(as_user: As, world: World) -> None:
    alice, bob, dave = await as_user("alice"), await as_user("bob"), await as_user("dave")
    phone = world.cases["phone"]
    assert (await alice.lock(phone, "notes", "alice-tab")).status_code == 200
    assert (await dave.unlock(phone, "notes", "dave-tab")).status_code == 204
    assert await alice.locks(world.branches["downtown"]) == []
    assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
    # Forcing needs no client id either.
    assert (await dave.unlock(phone, "notes", None)).status_code == 204
    assert await alice.locks(world.branches["downtown"]) == []


async def test_manager_can_lock_too(as_user: As, world: World) -> None:
    dave = await as_user("dave")
    assert (await dave.lock(world.cases["phone"], "status", "dave-tab")).status_code == 200


@pytest.mark.parametrize("field", ["colour", "version", "case_number", "id", "deleted"])
async def test_unknown_or_read_only_field_is_422(as_user: As, world: World, field: str) -> None:
    alice = await as_user("alice")
    for response in (
        await alice.lock(world.cases["phone"], field, "tab-1"),
        await alice.unlock(world.cases["phone"], field, "tab-1"),
    ):
        body = assert_error(response, 422, "validation_error")
        assert body["field"] == field
        assert field in body["message"]
    assert await alice.locks(world.branches["downtown"]) == []


async def test_client_id_is_required_and_checked(as_user: As, world: World) -> None:
    alice = await as_user("alice")
    phone = world.cases["phone"]
    body = assert_error(await alice.lock(phone, "notes", None), 422, "validation_error")
    assert body["field"] == "X-Client-Id"
    # Latin-1 bytes arrive as "étab", "ü": letters, but not [A-Za-z0-9_-].
    for bad in (b"", b"x" * 65, b"with space", b"\xe9tab", b"\xfc", b"a/b", b"a.b.c", b".b", b"a."):
        headers = {**alice.csrf, "X-Client-Id": bad}  # type: ignore[dict-item]
        response = await alice.http.put(f"/api/cases/{phone}/locks/notes", headers=headers)
        assert_error(response, 422, "validation_error")
    assert (await alice.lock(phone, "notes", "A-z_0-9" + "x" * 57)).status_code == 200
    assert len(await alice.locks(world.branches["downtown"])) == 1


async def test_viewer_cannot_lock_or_unlock(as_user: As, world: World) -> None:
    carol, alice = await as_user("carol"), await as_user("alice")
    phone = world.cases["phone"]
    assert_error(await carol.lock(phone, "notes", "carol-tab"), 403, "forbidden")
    assert (await alice.lock(phone, "notes", "alice-tab")).status_code == 200
    assert_error(await carol.unlock(phone, "notes", "carol-tab"), 403, "forbidden")
    assert len(await alice.locks(world.branches["downtown"])) == 1


async def test_lock_answer_order(as_user: As, client: httpx.AsyncClient, world: World) -> None:
    """401; CSRF 403; not visible 404; viewer 403; unknown field 422 (docs/protocol.md, "Locks")."""
    url = f"/api/cases/{world.cases['phone']}/locks/colour"
    anonymous = await client.put(url, headers={"X-CSRF-Token": "bad"})
    assert_error(anonymous, 401, "not_authenticated")
    carol, bob = await as_user("carol"), await as_user("bob")
    response = await carol.http.put(url, headers={"X-CSRF-Token": "bad"})
    assert_error(response, 403, "csrf_failed")
    assert_error(await bob.lock(world.cases["airport"], "colour", None), 404, "not_found")
    assert_error(await bob.lock(999999, "colour", None), 404, "not_found")
    assert_error(await carol.lock(world.cases["phone"], "colour", None), 403, "forbidden")
    body = assert_error(
        await bob.lock(world.cases["phone"], "colour", None), 422, "validation_error"
    )
    assert body["field"] == "colour"


async def test_lock_on_a_deleted_case_is_404(as_user: As, world: World) -> None:
    alice, dave = await as_user("alice"), await as_user("dave")
    phone = world.cases["phone"]
    assert (await dave.http.delete(f"/api/cases/{phone}", headers=dave.csrf)).status_code == 204
    assert_error(await alice.lock(phone, "notes", "tab"), 404, "not_found")
    assert_error(await alice.unlock(phone, "notes", "tab"), 404, "not_found")


async def test_lock_expires_without_renewal(db_url: str, world: World) -> None:
    import asyncio

    from conftest import make_settings
    from warrantysync import create_app

    app = create_app(make_settings(db_url, lock_ttl=0.5))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as a,
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as b,
        ):
            alice = Browser(a, await login(a, "alice@example.com"))
            bob = Browser(b, await login(b, "bob@example.com"))
            phone = world.cases["phone"]
            old = (await alice.lock(phone, "notes", "alice-tab")).json()["lock"]["token"]
            assert_error(await bob.lock(phone, "notes", "bob-tab"), 423, "locked")
            await asyncio.sleep(0.8)
            assert await bob.locks(world.branches["downtown"]) == []
            assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
            # The expired owner's late save is fenced off.
            response = await a.patch(
                f"/api/cases/{phone}",
                json={"changes": {"notes": "late"}, "lock_tokens": {"notes": old}},
                headers={**alice.csrf, "X-Client-Id": "alice-tab"},
            )
            assert_error(response, 423, "locked")


async def test_lock_limits_answer_after_the_holder(db_url: str, world: World) -> None:
    """423 ``locked`` · 409 ``stream_required`` · 423 ``lock_barred`` · 429 ``too_many_locks``."""
    from conftest import make_settings
    from warrantysync import create_app

    settings = make_settings(db_url, max_locks_per_user=2, forced_release_cooldown=60)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as a,
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as b,
            httpx.AsyncClient(transport=transport, base_url="http://testserver") as d,
        ):
            alice = Browser(a, await login(a, "alice@example.com"))
            bob = Browser(b, await login(b, "bob@example.com"))
            dave = Browser(d, await login(d, "dave@example.com"))
            phone, laptop = world.cases["phone"], world.cases["laptop"]
            assert (await alice.lock(phone, "notes", "a")).status_code == 200
            assert (await bob.lock(phone, "issue", "b")).status_code == 200
            assert (await dave.unlock(phone, "issue", None)).status_code == 204  # Bob barred
            assert (await bob.lock(laptop, "notes", "b")).status_code == 200
            assert (await bob.lock(laptop, "issue", "b")).status_code == 200  # at his cap
            # Held by Alice: "locked" comes first, whatever Bob's limits.
            assert_error(await bob.lock(phone, "notes", "b"), 423, "locked")
            # Barred and at the cap: the bar is named.
            barred = assert_error(await bob.lock(phone, "issue", "b"), 423, "lock_barred")
            assert set(barred) == {"error", "message", "field", "until"}
            body = assert_error(await bob.lock(phone, "status", "b"), 429, "too_many_locks")
            assert body["limit"] == 2
            # Renewals of what he holds still pass at the cap.
            assert (await bob.lock(laptop, "issue", "b")).status_code == 200
