"""Login, logout, sessions, CSRF/Origin, bearer tokens and login rate limits.

The contract: docs/protocol.md, "Authentication".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from conftest import login, make_settings
from factories import World
from warrantysync import create_app
from warrantysync.container import Services
from warrantysync.services import admin

SESSION_COOKIE = "warrantysync_session"
GENERIC = {"error": "invalid_credentials", "message": "email or password is wrong"}

ClientFactory = Callable[[], httpx.AsyncClient]

SECRET = "test-secret-key"  # make_settings() uses this key


@pytest.fixture
async def new_client(app_services: tuple[Any, Services]) -> AsyncIterator[ClientFactory]:
    """More browsers on the same app: one client is one cookie jar."""
    opened: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app_services[0])
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


@contextlib.asynccontextmanager
async def app_client(
    db_url: str, base_url: str = "http://testserver", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """A second app on the same database with other settings."""
    app = create_app(make_settings(db_url, **overrides))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


def session_cookie(response: httpx.Response) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(SESSION_COOKIE + "="):
            return header
    raise AssertionError(f"no {SESSION_COOKIE} cookie in {response.headers}")


def cookie_value(response: httpx.Response) -> str:
    return session_cookie(response).split(";", 1)[0].split("=", 1)[1]


def attributes(set_cookie: str) -> dict[str, str]:
    parts = [part.strip() for part in set_cookie.split(";")[1:]]
    return {
        part.split("=", 1)[0].lower(): (part.split("=", 1)[1] if "=" in part else "")
        for part in parts
    }


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"]
    return body


# -- login ---------------------------------------------------------------------


async def test_login_success_sets_a_safe_cookie(client: httpx.AsyncClient, world: World) -> None:
    response = await client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user"] == {
        "id": world.users["alice"],
        "name": "Alice Johnson",
        "email": "alice@example.com",
    }
    assert isinstance(body["csrf_token"], str) and len(body["csrf_token"]) >= 20
    assert set(body) == {"user", "csrf_token"}
    cookie = session_cookie(response)
    attrs = attributes(cookie)
    assert "httponly" in attrs
    assert attrs["samesite"].lower() == "lax"
    assert "secure" not in attrs  # plain http
    assert attrs["path"] == "/"
    assert int(attrs["max-age"]) >= 1
    token = cookie_value(response)
    assert len(token) >= 32 and token != body["csrf_token"]
    me = await client.get("/api/me")
    assert me.status_code == 200
    assert me.json()["csrf_token"] == body["csrf_token"]


async def test_login_over_https_sets_secure_cookie(db_url: str, world: World) -> None:
    async with app_client(db_url, base_url="https://testserver") as http:
        response = await http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
        )
        assert response.status_code == 200
        assert "secure" in attributes(session_cookie(response))


async def test_login_email_is_case_and_space_insensitive(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        "/api/auth/login", json={"email": "  ALICE@Example.com ", "password": "pw-secret"}
    )
    assert response.status_code == 200
    assert response.json()["user"]["id"] == world.users["alice"]


async def test_wrong_password_and_unknown_email_get_the_same_answer(
    client: httpx.AsyncClient, world: World
) -> None:
    wrong = await client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": "nope-nope"}
    )
    unknown = await client.post(
        "/api/auth/login", json={"email": "nobody@example.com", "password": "pw-secret"}
    )
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json() == GENERIC
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert (await client.get("/api/me")).status_code == 401


async def test_deactivated_user_cannot_log_in_and_loses_the_session(
    client: httpx.AsyncClient, services: Services, world: World, new_client: ClientFactory
) -> None:
    bob = new_client()
    await login(bob, "bob@example.com")
    assert (await bob.get("/api/me")).status_code == 200
    await admin.deactivate_user(services.db, email="bob@example.com")
    response = await client.post(
        "/api/auth/login", json={"email": "bob@example.com", "password": "pw-secret"}
    )
    assert response.status_code == 401
    assert response.json() == GENERIC
    assert_error(await bob.get("/api/me"), 401, "not_authenticated")


async def test_login_body_is_validated(client: httpx.AsyncClient, world: World) -> None:
    response = await client.post("/api/auth/login", json={"email": "alice@example.com"})
    body = assert_error(response, 422, "validation_error")
    assert "password" in body["message"]
    response = await client.post(
        "/api/auth/login", content=b"{", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert set(response.json()) >= {"error", "message"}


async def test_login_from_a_foreign_origin_is_refused(
    client: httpx.AsyncClient, world: World
) -> None:
    response = await client.post(
        "/api/auth/login",
        json={"email": "alice@example.com", "password": "pw-secret"},
        headers={"Origin": "https://evil.example"},
    )
    assert_error(response, 403, "csrf_failed")
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


# -- /api/me and logout -----------------------------------------------------------


async def test_me_shape(client: httpx.AsyncClient, world: World) -> None:
    assert_error(await client.get("/api/me"), 401, "not_authenticated")
    headers = await login(client, "alice@example.com")
    response = await client.get("/api/me")
    assert response.status_code == 200
    assert response.json() == {
        "id": world.users["alice"],
        "name": "Alice Johnson",
        "email": "alice@example.com",
        "csrf_token": headers["X-CSRF-Token"],
        "branches": [
            {"id": world.branches["downtown"], "name": "Downtown", "role": "editor"},
            {"id": world.branches["airport"], "name": "Airport", "role": "editor"},
        ],
    }


async def test_me_lists_each_role(
    client: httpx.AsyncClient, world: World, new_client: ClientFactory
) -> None:
    for email, role in (("carol@example.com", "viewer"), ("dave@example.com", "manager")):
        http = new_client()
        await login(http, email)
        branches = (await http.get("/api/me")).json()["branches"]
        assert branches == [{"id": world.branches["downtown"], "name": "Downtown", "role": role}]


async def test_logout_revokes_the_session_at_once(
    client: httpx.AsyncClient, world: World, new_client: ClientFactory
) -> None:
    response = await client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
    )
    token = cookie_value(response)
    csrf = {"X-CSRF-Token": response.json()["csrf_token"]}
    logout = await client.post("/api/auth/logout", headers=csrf)
    assert logout.status_code == 204
    assert attributes(session_cookie(logout)).get("max-age") == "0"
    # A copy of the cookie kept elsewhere is worthless now.
    thief = new_client()
    replay = await thief.get("/api/me", headers={"Cookie": f"{SESSION_COOKIE}={token}"})
    assert_error(replay, 401, "not_authenticated")
    patch = await thief.patch(
        f"/api/cases/{world.cases['phone']}",
        json={"changes": {"notes": "x"}},
        headers={"Cookie": f"{SESSION_COOKIE}={token}", **csrf},
    )
    assert patch.status_code == 401


async def test_logout_needs_csrf(client: httpx.AsyncClient, world: World) -> None:
    await login(client, "alice@example.com")
    assert_error(await client.post("/api/auth/logout"), 403, "csrf_failed")
    assert (await client.get("/api/me")).status_code == 200


async def test_logout_of_one_session_keeps_the_others(
    client: httpx.AsyncClient, world: World, new_client: ClientFactory
) -> None:
    other = new_client()
    await login(other, "alice@example.com")
    headers = await login(client, "alice@example.com")
    assert (await client.post("/api/auth/logout", headers=headers)).status_code == 204
    assert (await client.get("/api/me")).status_code == 401
    assert (await other.get("/api/me")).status_code == 200


async def test_a_forged_cookie_is_401(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/api/me", headers={"Cookie": f"{SESSION_COOKIE}=forged"})
    body = assert_error(response, 401, "not_authenticated")
    assert "Traceback" not in body["message"]


# -- CSRF and Origin ---------------------------------------------------------------


def writes(world: World) -> list[tuple[str, str, dict[str, Any]]]:
    phone = world.cases["phone"]
    return [
        ("PATCH", f"/api/cases/{phone}", {"json": {"changes": {"notes": "csrf"}}}),
        (
            "POST",
            f"/api/branches/{world.branches['downtown']}/cases",
            {"json": {"customer_name": "X"}},
        ),
        ("DELETE", f"/api/cases/{phone}", {}),
        ("PUT", f"/api/cases/{phone}/locks/notes", {"headers": {"X-Client-Id": "tab-1"}}),
        ("DELETE", f"/api/cases/{phone}/locks/notes", {"headers": {"X-Client-Id": "tab-1"}}),
    ]


async def snapshot_state(http: httpx.AsyncClient, world: World) -> Any:
    response = await http.get(f"/api/branches/{world.branches['downtown']}/cases")
    body = response.json()
    return body["cases"], body["locks"], body["last_event_id"]


@pytest.mark.parametrize("csrf", [None, "", "wrong-token"])
async def test_cookie_writes_without_the_right_csrf_token_are_403(
    client: httpx.AsyncClient, world: World, csrf: str | None
) -> None:
    await login(client, "dave@example.com")  # a manager: every write would be allowed
    before = await snapshot_state(client, world)
    for method, url, kwargs in writes(world):
        headers = dict(kwargs.get("headers", {}))
        if csrf is not None:
            headers["X-CSRF-Token"] = csrf
        response = await client.request(method, url, json=kwargs.get("json"), headers=headers)
        assert_error(response, 403, "csrf_failed")
        assert "X-CSRF-Token" in response.json()["message"]
    assert await snapshot_state(client, world) == before


async def test_csrf_token_of_another_session_is_refused(
    client: httpx.AsyncClient, world: World, new_client: ClientFactory
) -> None:
    other = await login(new_client(), "alice@example.com")
    await login(client, "alice@example.com")
    response = await client.patch(
        f"/api/cases/{world.cases['phone']}", json={"changes": {"notes": "x"}}, headers=other
    )
    assert_error(response, 403, "csrf_failed")


async def test_reads_need_no_csrf(client: httpx.AsyncClient, world: World) -> None:
    await login(client, "alice@example.com")
    assert (await client.get(f"/api/cases/{world.cases['phone']}")).status_code == 200
    assert (
        await client.get(f"/api/branches/{world.branches['downtown']}/cases")
    ).status_code == 200


@pytest.mark.parametrize(
    "origin",
    ["https://evil.example", "http://testserver.evil.example", "null", "https://testserver"],
)
async def test_foreign_origin_is_403_even_with_the_csrf_token(
    client: httpx.AsyncClient, world: World, origin: str
) -> None:
    headers = await login(client, "dave@example.com")
    for method, url, kwargs in writes(world):
        response = await client.request(
            method,
            url,
            json=kwargs.get("json"),
            headers={**kwargs.get("headers", {}), **headers, "Origin": origin},
        )
        assert_error(response, 403, "csrf_failed")
        assert "origin" in response.json()["message"].lower()


async def test_own_origin_is_allowed(client: httpx.AsyncClient, world: World) -> None:
    headers = await login(client, "alice@example.com")
    response = await client.patch(
        f"/api/cases/{world.cases['phone']}",
        json={"changes": {"notes": "same origin"}},
        headers={**headers, "Origin": "http://testserver"},
    )
    assert response.status_code == 200, response.text


async def test_allowed_origins_setting(db_url: str, world: World) -> None:
    async with app_client(db_url, allowed_origins="https://tools.example.com") as http:
        headers = await login(http, "alice@example.com")
        url = f"/api/cases/{world.cases['phone']}"
        ok = await http.patch(
            url,
            json={"changes": {"notes": "from tools"}},
            headers={**headers, "Origin": "https://tools.example.com"},
        )
        assert ok.status_code == 200, ok.text
        refused = await http.patch(
            url,
            json={"changes": {"notes": "from evil"}},
            headers={**headers, "Origin": "https://evil.example"},
        )
        assert_error(refused, 403, "csrf_failed")


# -- bearer tokens -----------------------------------------------------------------


async def test_bearer_token_writes_without_csrf(
    client: httpx.AsyncClient, services: Services, world: World
) -> None:
    token = await admin.create_token(
        services.db,
        email="alice@example.com",
        name="script",
        secret_key=services.settings.secret_key,
    )
    auth = {"Authorization": f"Bearer {token}"}
    me = await client.get("/api/me", headers=auth)
    assert me.status_code == 200
    assert me.json()["id"] == world.users["alice"]
    assert me.json()["csrf_token"] is None
    response = await client.patch(
        f"/api/cases/{world.cases['phone']}",
        json={"changes": {"notes": "from a script"}},
        headers={**auth, "Origin": "https://elsewhere.example"},  # bearer needs no Origin check
    )
    assert response.status_code == 200, response.text
    assert response.json()["notes"] == "from a script"
    created = await client.post(
        f"/api/branches/{world.branches['downtown']}/cases",
        json={"customer_name": "Scripted"},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    lock = await client.put(
        f"/api/cases/{world.cases['phone']}/locks/notes",
        headers={**auth, "X-Client-Id": "script-1"},
    )
    assert lock.status_code == 200, lock.text
    # The bearer scheme name is case-insensitive.
    lower = await client.get("/api/me", headers={"Authorization": f"bearer {token}"})
    assert lower.status_code == 200


async def test_bearer_token_keeps_roles_and_membership(
    client: httpx.AsyncClient, services: Services, world: World
) -> None:
    token = await admin.create_token(
        services.db,
        email="carol@example.com",
        name="viewer",
        secret_key=services.settings.secret_key,
    )
    auth = {"Authorization": f"Bearer {token}"}
    response = await client.patch(
        f"/api/cases/{world.cases['phone']}", json={"changes": {"notes": "x"}}, headers=auth
    )
    assert_error(response, 403, "forbidden")
    response = await client.get(f"/api/cases/{world.cases['airport']}", headers=auth)
    assert_error(response, 404, "not_found")


async def test_revoked_unknown_and_deactivated_tokens_are_401(
    client: httpx.AsyncClient, services: Services, world: World
) -> None:
    token = await admin.create_token(
        services.db,
        email="alice@example.com",
        name="script",
        secret_key=services.settings.secret_key,
    )
    auth = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/api/me", headers=auth)).status_code == 200
    [listed] = await admin.list_tokens(services.db, email="alice@example.com")
    await admin.revoke_token(services.db, token_id=listed.id)
    for headers in (
        auth,
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer "},
    ):
        assert_error(await client.get("/api/me", headers=headers), 401, "not_authenticated")
        response = await client.patch(
            f"/api/cases/{world.cases['phone']}",
            json={"changes": {"notes": "x"}},
            headers=headers,
        )
        assert_error(response, 401, "not_authenticated")
    bob_token = await admin.create_token(
        services.db, email="bob@example.com", name="bob", secret_key=SECRET
    )
    await admin.deactivate_user(services.db, email="bob@example.com")
    response = await client.get("/api/me", headers={"Authorization": f"Bearer {bob_token}"})
    assert_error(response, 401, "not_authenticated")


async def test_401_carries_www_authenticate(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/api/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].lower().startswith("bearer")


# -- session expiry ------------------------------------------------------------------


async def test_session_expires_after_the_idle_ttl(db_url: str, world: World) -> None:
    async with app_client(db_url, session_ttl=1.0) as http:
        response = await http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
        )
        assert response.status_code == 200
        cookie = {"Cookie": f"{SESSION_COOKIE}={cookie_value(response)}"}
        http.cookies.clear()  # send the cookie by hand: the server, not the jar, must refuse it
        assert (await http.get("/api/me", headers=cookie)).status_code == 200
        await asyncio.sleep(1.3)
        assert_error(await http.get("/api/me", headers=cookie), 401, "not_authenticated")


async def test_an_active_session_does_not_expire(db_url: str, world: World) -> None:
    """SESSION_TTL is an *idle* lifetime: a user who keeps working stays logged in."""
    async with app_client(db_url, session_ttl=1.0) as http:
        response = await http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
        )
        cookie = {"Cookie": f"{SESSION_COOKIE}={cookie_value(response)}"}
        http.cookies.clear()
        slid = 0
        for _ in range(6):
            await asyncio.sleep(0.3)
            me = await http.get("/api/me", headers=cookie)
            assert me.status_code == 200
            if "set-cookie" in me.headers:
                # The browser's cookie slides with the server-side session.
                assert cookie_value(me) == cookie_value(response)
                slid += 1
        assert slid >= 1


async def test_fractional_session_ttl_still_gives_a_usable_cookie(
    db_url: str, world: World
) -> None:
    """Durations accept fractions (README, "Configuration"): the cookie must not be born expired."""
    async with app_client(db_url, session_ttl=0.5) as http:
        response = await http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
        )
        assert int(attributes(session_cookie(response))["max-age"]) >= 1
        assert (await http.get("/api/me")).status_code == 200


# -- login rate limit -----------------------------------------------------------------


async def test_login_rate_limit_per_account(db_url: str, world: World) -> None:
    async with app_client(db_url, rate_limit_login="2/15minutes;50/15minutes") as http:
        bad = {"email": "alice@example.com", "password": "wrong-one"}
        good = {"email": "alice@example.com", "password": "pw-secret"}
        for _ in range(2):
            assert (await http.post("/api/auth/login", json=bad)).status_code == 401
        for attempt in (good, bad, {**good, "email": "ALICE@example.com"}):
            response = await http.post("/api/auth/login", json=attempt)
            body = assert_error(response, 429, "rate_limited")
            retry_after = int(response.headers["retry-after"])
            assert 1 <= retry_after <= 15 * 60
            assert str(retry_after) in body["message"]
            assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
        # Other accounts are not affected.
        await login(http, "bob@example.com")


async def test_login_successes_do_not_count(db_url: str, world: World) -> None:
    async with app_client(db_url, rate_limit_login="2/15minutes;50/15minutes") as http:
        for _ in range(4):
            await login(http, "alice@example.com")
        assert (
            await http.post(
                "/api/auth/login", json={"email": "alice@example.com", "password": "x-wrong"}
            )
        ).status_code == 401
        await login(http, "alice@example.com")


async def test_refused_login_attempts_do_not_count(db_url: str, world: World) -> None:
    # Per account 2, per IP 3: alice's refused attempts must not use up the IP's allowance.
    async with app_client(db_url, rate_limit_login="2/15minutes;3/15minutes") as http:
        bad = {"email": "alice@example.com", "password": "wrong-one"}
        for _ in range(2):
            assert (await http.post("/api/auth/login", json=bad)).status_code == 401
        for _ in range(5):
            assert (await http.post("/api/auth/login", json=bad)).status_code == 429
        await login(http, "bob@example.com")  # IP has 2 of 3 used
        response = await http.post(
            "/api/auth/login", json={"email": "bob@example.com", "password": "wrong-one"}
        )
        assert response.status_code == 401  # the third failure of this IP is still answered
        response = await http.post(
            "/api/auth/login", json={"email": "carol@example.com", "password": "pw-secret"}
        )
        assert_error(response, 429, "rate_limited")  # now the IP is exhausted
        assert "retry-after" in response.headers


# -- changing the password ---------------------------------------------------------


async def change_password(
    http: httpx.AsyncClient, headers: dict[str, str], current: str, new: str
) -> httpx.Response:
    return await http.post(
        "/api/auth/password",
        json={"current_password": current, "new_password": new},
        headers=headers,
    )


async def test_a_password_change_ends_every_other_session(
    client: httpx.AsyncClient, world: World, new_client: ClientFactory
) -> None:
    laptop, phone = new_client(), new_client()
    await login(laptop, "alice@example.com")
    await login(phone, "alice@example.com")
    bob = new_client()
    await login(bob, "bob@example.com")
    headers = await login(client, "alice@example.com")

    response = await change_password(client, headers, "pw-secret", "a much longer one")
    assert response.status_code == 200, response.text
    assert response.json() == {"sessions_ended": 2}
    # This session goes on; the others of the same user are gone; Bob is untouched.
    assert (await client.get("/api/me")).status_code == 200
    assert (await laptop.get("/api/me")).status_code == 401
    assert (await phone.get("/api/me")).status_code == 401
    assert (await bob.get("/api/me")).status_code == 200
    old = await client.post(
        "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
    )
    assert old.status_code == 401
    await login(new_client(), "alice@example.com", "a much longer one")


async def test_a_password_change_needs_the_current_password_and_csrf(
    client: httpx.AsyncClient, world: World
) -> None:
    headers = await login(client, "alice@example.com")
    body = assert_error(
        await change_password(client, headers, "not-it", "a much longer one"),
        422,
        "validation_error",
    )
    assert (body["field"], body["rule"]) == ("current_password", "incorrect")
    assert_error(
        await change_password(client, {}, "pw-secret", "a much longer one"), 403, "csrf_failed"
    )
    anonymous = await client.post(
        "/api/auth/logout", headers=headers
    )  # signed out: the change is 401
    assert anonymous.status_code == 204
    assert_error(
        await change_password(client, headers, "pw-secret", "a much longer one"),
        401,
        "not_authenticated",
    )


@pytest.mark.parametrize(
    ("new", "rule"),
    [("short", "min_length"), (" " * 12, "blank"), ("x" * 1025, "max_length")],
)
async def test_a_new_password_must_follow_the_policy(
    client: httpx.AsyncClient, world: World, new: str, rule: str
) -> None:
    headers = await login(client, "alice@example.com")
    body = assert_error(
        await change_password(client, headers, "pw-secret", new), 422, "validation_error"
    )
    assert (body["field"], body["rule"]) == ("new_password", rule)
    # Nothing changed: the old password still works.
    await login(client, "alice@example.com")


async def test_wrong_current_passwords_share_the_login_limit(db_url: str, world: World) -> None:
    async with app_client(db_url, rate_limit_login="2/15minutes;50/15minutes") as http:
        headers = await login(http, "alice@example.com")
        for _ in range(2):
            response = await change_password(http, headers, "guess", "a much longer one")
            assert response.status_code == 422
        response = await change_password(http, headers, "pw-secret", "a much longer one")
        assert_error(response, 429, "rate_limited")
        assert "retry-after" in response.headers
        # The login of that account is held back as well.
        again = await http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": "pw-secret"}
        )
        assert again.status_code == 429
