"""A save's remembered caller and access (services/passes.py) never outlive a revocation.

Each test warms the memory with two saves through a real server, takes the
access away — through the API, on another server of the same database, or
behind the servers' backs as the CLI does — and checks that the very next
save gets the answer it would get without any memory, and changes nothing.
The last ones check that the memory changes no answer and no count either.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from redis.asyncio import Redis

from conftest import LiveFactory
from factories import World
from live import LiveServer
from servers import RedisServer
from warrantysync.services import admin
from warrantysync.storage.db import Database

SECRET = "live-test-secret"  # conftest.LIVE_ENV's


async def login(http: httpx.AsyncClient, email: str = "bob@example.com") -> None:
    response = await http.post("/api/auth/login", json={"email": email, "password": "pw-secret"})
    assert response.status_code == 200, response.text
    http.headers["X-CSRF-Token"] = response.json()["csrf_token"]


async def save(http: httpx.AsyncClient, case_id: int, notes: str) -> httpx.Response:
    return await http.patch(f"/api/cases/{case_id}", json={"changes": {"notes": notes}})


async def warmed(http: httpx.AsyncClient, case_id: int) -> int:
    """Two saves, so the second one ran on the memory; returns the case's version."""
    for n in range(2):
        response = await save(http, case_id, f"warm {n}")
        assert response.status_code == 200, response.text
    version: int = response.json()["version"]
    return version


def refused(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"] == error


async def version_of(db: Database, case_id: int) -> int:
    from sqlalchemy import select

    from warrantysync.storage.models import WarrantyCase

    async with db.read() as session:
        version = await session.scalar(
            select(WarrantyCase.version).where(WarrantyCase.id == case_id)
        )
    assert version is not None
    return version


@pytest.fixture
async def one(live_factory: LiveFactory) -> AsyncIterator[tuple[LiveServer, World, Database]]:
    server, world = live_factory()
    db = Database(server.env["WARRANTYSYNC_DATABASE_URL"])
    try:
        yield server, world, db
    finally:
        await db.dispose()


Revoke = Callable[[Database, httpx.AsyncClient], Awaitable[object]]


async def _deactivate(db: Database, _http: httpx.AsyncClient) -> object:
    return await admin.deactivate_user(db, email="bob@example.com")


async def _new_password(db: Database, _http: httpx.AsyncClient) -> object:
    return await admin.set_password(db, email="bob@example.com", password="another-secret")


async def _logout(_db: Database, http: httpx.AsyncClient) -> object:
    response = await http.post("/api/auth/logout")
    assert response.status_code == 204
    http.cookies.clear()
    return response


@pytest.mark.parametrize("revoke", [_logout, _deactivate, _new_password])
async def test_a_session_revoked_is_401_at_the_next_save(
    one: tuple[LiveServer, World, Database], revoke: Revoke
) -> None:
    server, world, db = one
    phone = world.cases["phone"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        await login(http)
        cookie = http.cookies.get("warrantysync_session")
        version = await warmed(http, phone)
        await revoke(db, http)
        if cookie is not None:  # the old cookie again, as a thief would send it
            http.cookies.set("warrantysync_session", cookie)
        refused(await save(http, phone, "after"), 401, "not_authenticated")
    assert await version_of(db, phone) == version


async def test_a_password_changed_elsewhere_ends_this_session_at_its_next_save(
    one: tuple[LiveServer, World, Database],
) -> None:
    server, world, _db = one
    phone = world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=server.url) as here,
        httpx.AsyncClient(base_url=server.url) as there,
    ):
        await login(here)
        await login(there)
        await warmed(here, phone)
        changed = await there.post(
            "/api/auth/password",
            json={"current_password": "pw-secret", "new_password": "another-secret"},
        )
        assert changed.json() == {"sessions_ended": 1}
        refused(await save(here, phone, "after"), 401, "not_authenticated")
        assert (await save(there, phone, "still mine")).status_code == 200


async def test_a_revoked_or_deactivated_api_token_is_401_at_the_next_save(
    one: tuple[LiveServer, World, Database],
) -> None:
    server, world, db = one
    phone = world.cases["phone"]
    for revoke in ("token", "user"):
        token = await admin.create_token(
            db, email="alice@example.com", name=revoke, secret_key=SECRET
        )
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as http:
            version = await warmed(http, phone)
            if revoke == "token":
                (listed,) = [t for t in await admin.list_tokens(db) if t.name == revoke]
                await admin.revoke_token(db, token_id=listed.id)
            else:
                await admin.deactivate_user(db, email="alice@example.com")
            refused(await save(http, phone, "after"), 401, "not_authenticated")
        assert await version_of(db, phone) == version


async def test_a_membership_removed_or_lowered_answers_at_the_next_save(
    one: tuple[LiveServer, World, Database],
) -> None:
    server, world, db = one
    phone = world.cases["phone"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        await login(http)
        version = await warmed(http, phone)
        await admin.set_role(
            db, email="bob@example.com", branch_id=world.branches["downtown"], role="viewer"
        )
        refused(await save(http, phone, "as a viewer"), 403, "forbidden")
        # An invalid body too: the role is answered first (docs/protocol.md, PATCH).
        bad = await http.patch(f"/api/cases/{phone}", json={"changes": {"nope": 1}})
        refused(bad, 403, "forbidden")
        await admin.set_role(
            db, email="bob@example.com", branch_id=world.branches["downtown"], role="editor"
        )
        version = await warmed(http, phone)
        await admin.remove_member(db, email="bob@example.com", branch_id=world.branches["downtown"])
        refused(await save(http, phone, "as nobody"), 404, "not_found")
        bad = await http.patch(f"/api/cases/{phone}", json={"changes": {"nope": 1}})
        refused(bad, 404, "not_found")
    assert await version_of(db, phone) == version


async def test_a_logout_on_one_server_ends_the_session_on_the_other(
    live_factory: LiveFactory,
) -> None:
    first, world = live_factory()
    second, _ = live_factory()
    phone = world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=first.url) as on_first,
        httpx.AsyncClient(base_url=second.url) as on_second,
    ):
        await login(on_first)
        on_second.cookies.update(on_first.cookies)
        on_second.headers["X-CSRF-Token"] = on_first.headers["X-CSRF-Token"]
        await warmed(on_second, phone)
        assert (await on_first.post("/api/auth/logout")).status_code == 204
        refused(await save(on_second, phone, "after"), 401, "not_authenticated")


async def test_a_remembered_save_is_the_same_save(
    one: tuple[LiveServer, World, Database],
) -> None:
    """Refusals on the remembered path keep their answers: 422, 409, the replay."""
    server, world, _db = one
    phone = world.cases["phone"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        await login(http)
        version = await warmed(http, phone)
        bad = await http.patch(f"/api/cases/{phone}", json={"changes": {"nope": 1}})
        refused(bad, 422, "validation_error")
        stale = await http.patch(
            f"/api/cases/{phone}",
            json={"changes": {"notes": "x"}, "expected": {"notes": "not what is there"}},
        )
        refused(stale, 409, "conflict")
        key = {"Idempotency-Key": "remembered-1"}
        body = {"changes": {"notes": "once"}}
        first = await http.patch(f"/api/cases/{phone}", json=body, headers=key)
        again = await http.patch(f"/api/cases/{phone}", json=body, headers=key)
        assert first.status_code == again.status_code == 200
        assert again.headers.get("idempotent-replayed") == "true"
        assert again.json() == first.json() and first.json()["version"] == version + 1
        reused = await http.patch(
            f"/api/cases/{phone}", json={"changes": {"notes": "other"}}, headers=key
        )
        refused(reused, 422, "idempotency_key_reused")
        # A refusal stored under its key is the answer to the retry too.
        key = {"Idempotency-Key": "remembered-2"}
        first = await http.patch(
            f"/api/cases/{phone}", json={"changes": {"serial_number": "y" * 500}}, headers=key
        )
        again = await http.patch(
            f"/api/cases/{phone}", json={"changes": {"serial_number": "y" * 500}}, headers=key
        )
        refused(first, 422, "validation_error")
        refused(again, 422, "validation_error")
        assert again.headers.get("idempotent-replayed") == "true"
        # Two saves racing on the memory: both land, one version each.
        racing = await asyncio.gather(*(save(http, phone, f"race {n}") for n in range(4)))
        assert sorted(r.json()["version"] for r in racing) == list(range(version + 2, version + 6))


def rate_limited(metrics: str) -> float:
    """``warrantysync_rate_limited_total`` for writes, from a ``/metrics`` page."""
    for line in metrics.splitlines():
        if line.startswith('warrantysync_rate_limited_total{scope="writes"}'):
            return float(line.split()[-1])
    return 0.0


async def test_a_save_counts_once_against_the_write_limit(
    live_factory: LiveFactory, redis_server: RedisServer
) -> None:
    """A save refused with 429 on the memory is one hit on the limit, as on the fresh path.

    Both servers count in one Redis; the second has only the first one's
    hourly limit, so what it still allows shows how many saves the first one
    counted there: the refused save once, like each one that landed.
    """
    url = redis_server.url.rsplit("/", 1)[0] + "/9"
    redis = Redis.from_url(url)
    await redis.flushdb()
    await redis.aclose()
    strict, world = live_factory(redis_url=url, rate_limit_writes="5/hour;3/hour")
    hourly, _ = live_factory(redis_url=url, rate_limit_writes="5/hour")
    phone = world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=strict.url) as on_strict,
        httpx.AsyncClient(base_url=hourly.url) as on_hourly,
    ):
        await login(on_strict)
        # The first save reads afresh, the others run on the memory.
        answers = [(await save(on_strict, phone, f"s{n}")).status_code for n in range(4)]
        assert answers == [200, 200, 200, 429]
        assert rate_limited((await on_strict.get("/metrics")).text) == 1
        on_hourly.cookies.update(on_strict.cookies)
        on_hourly.headers["X-CSRF-Token"] = on_strict.headers["X-CSRF-Token"]
        # Four of the five counted: one save left, then the hourly limit's own 429.
        answers = [(await save(on_hourly, phone, f"h{n}")).status_code for n in range(3)]
        assert answers == [200, 429, 429]
        assert rate_limited((await on_hourly.get("/metrics")).text) == 2
