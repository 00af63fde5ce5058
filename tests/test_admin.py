"""services/admin.py: users, branches, memberships and API tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from warrantysync.errors import InvalidCredentials, NotFound, ValidationFailed
from warrantysync.services import admin
from warrantysync.services.accounts import Accounts
from warrantysync.storage.db import Database
from warrantysync.storage.models import ApiToken, Role, Session

SECRET = "test-secret-key"


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def accounts(db: Database) -> Accounts:
    return Accounts(db, session_ttl=3600, secret_key=SECRET)


async def test_create_user_normalises_email_and_can_log_in(
    db: Database, accounts: Accounts
) -> None:
    user = await admin.create_user(
        db, email="  Zoe.Park@Example.COM ", name=" Zoe Park ", password="s3cret!!x"
    )
    assert (user.email, user.name, user.is_active) == ("zoe.park@example.com", "Zoe Park", True)
    assert user.password_hash != "s3cret!"
    logged_in = await accounts.check_password(email="zoe.park@example.com", password="s3cret!!x")
    assert logged_in.id == user.id


async def test_create_inactive_user_cannot_log_in(db: Database, accounts: Accounts) -> None:
    await admin.create_user(
        db, email="off@example.com", name="Off", password="pass-word", active=False
    )
    with pytest.raises(InvalidCredentials):
        await accounts.check_password(email="off@example.com", password="pass-word")


async def test_duplicate_email_is_refused_whatever_the_case(db: Database) -> None:
    await admin.create_user(db, email="sam@example.com", name="Sam", password="pass-word")
    with pytest.raises(ValidationFailed) as caught:
        await admin.create_user(db, email="SAM@example.com", name="Sam Two", password="pass-word")
    assert caught.value.extra == {"field": "email", "rule": "unique"}
    assert "already exists" in caught.value.message


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        ({"email": "not-an-email"}, "email", "email"),
        ({"email": "a@b"}, "email", "email"),
        ({"email": "   "}, "email", "required"),
        ({"email": "x" * 250 + "@example.com"}, "email", "max_length"),
        ({"name": "  "}, "name", "required"),
        ({"name": "n" * 121}, "name", "max_length"),
        ({"password": "abc"}, "password", "min_length"),
        ({"password": "seven77"}, "password", "min_length"),
        ({"password": " " * 12}, "password", "blank"),
        ({"password": "\t\n \u3000" * 3}, "password", "blank"),
        ({"password": "p" * 1025}, "password", "max_length"),
    ],
)
async def test_create_user_rejects_bad_input(
    db: Database, kwargs: dict[str, str], field: str, rule: str
) -> None:
    values = {"email": "ok@example.com", "name": "Ok", "password": "long enough", **kwargs}
    with pytest.raises(ValidationFailed) as caught:
        await admin.create_user(
            db, email=values["email"], name=values["name"], password=values["password"]
        )
    assert caught.value.extra == {"field": field, "rule": rule}
    assert await admin.list_users(db) == []


async def test_deactivate_revokes_sessions_and_tokens(db: Database, accounts: Accounts) -> None:
    user = await admin.create_user(db, email="eve@example.com", name="Eve", password="pass-word")
    other = await admin.create_user(db, email="finn@example.com", name="Finn", password="pass-word")
    session = await accounts.open_session(user)
    other_session = await accounts.open_session(other)
    token = await admin.create_token(db, email="eve@example.com", name="script", secret_key=SECRET)
    assert await accounts.from_cookie(session.token) is not None
    assert await accounts.from_bearer(token) is not None

    deactivated = await admin.deactivate_user(db, email="EVE@example.com")

    assert deactivated.is_active is False
    assert await accounts.from_cookie(session.token) is None
    assert await accounts.from_bearer(token) is None
    with pytest.raises(InvalidCredentials):
        await accounts.check_password(email="eve@example.com", password="pass-word")
    async with db.read() as s:
        # Revoked for good, not only hidden by is_active: reactivation does not revive them.
        revoked = await s.scalars(select(Session.revoked_at).where(Session.user_id == user.id))
        assert all(r is not None for r in revoked)
        assert all(r is not None for r in await s.scalars(select(ApiToken.revoked_at)))
    assert await accounts.from_cookie(other_session.token) is not None

    await admin.activate_user(db, email="eve@example.com")
    assert await accounts.from_cookie(session.token) is None
    assert await accounts.from_bearer(token) is None
    assert (
        await accounts.check_password(email="eve@example.com", password="pass-word")
    ).id == user.id


async def test_unknown_user_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound, match=r"nobody@example\.com"):
        await admin.deactivate_user(db, email="nobody@example.com")
    with pytest.raises(NotFound, match=r"nobody@example\.com"):
        await admin.create_token(db, email="nobody@example.com", name="x", secret_key=SECRET)


async def test_list_users_shows_memberships(db: Database) -> None:
    downtown = await admin.create_branch(db, name="Downtown", timezone="America/New_York")
    airport = await admin.create_branch(db, name="Airport")
    await admin.create_user(db, email="b@example.com", name="Bea", password="pass-word")
    await admin.create_user(db, email="a@example.com", name="Al", password="pass-word")
    await admin.add_member(db, email="b@example.com", branch_id=airport.id, role="manager")
    await admin.add_member(db, email="b@example.com", branch_id=downtown.id, role=Role.viewer)

    listed = await admin.list_users(db)

    assert [u.email for u in listed] == ["b@example.com", "a@example.com"]  # by id
    assert listed[0].memberships == (
        (downtown.id, "Downtown", Role.viewer),
        (airport.id, "Airport", Role.manager),
    )
    assert listed[1].memberships == ()


async def test_create_branch_checks_timezone_and_name(db: Database) -> None:
    branch = await admin.create_branch(db, name="  Harbour ", timezone="Europe/Berlin")
    assert (branch.name, branch.timezone, branch.last_event_id) == ("Harbour", "Europe/Berlin", 0)
    assert (await admin.create_branch(db, name="Plain")).timezone == "UTC"
    for bad in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValidationFailed) as caught:
            await admin.create_branch(db, name="X", timezone=bad)
        assert caught.value.extra == {"field": "timezone", "rule": "timezone"}
    with pytest.raises(ValidationFailed) as caught:
        await admin.create_branch(db, name=" ")
    assert caught.value.extra["rule"] == "required"
    assert [b.name for b in await admin.list_branches(db)] == ["Harbour", "Plain"]


async def test_members_add_role_remove(db: Database, accounts: Accounts) -> None:
    branch = await admin.create_branch(db, name="Downtown")
    user = await admin.create_user(db, email="gus@example.com", name="Gus", password="pass-word")

    await admin.add_member(db, email="gus@example.com", branch_id=branch.id, role="viewer")
    assert await accounts.role_in(user_id=user.id, branch_id=branch.id) is Role.viewer

    with pytest.raises(ValidationFailed) as caught:
        await admin.add_member(db, email="gus@example.com", branch_id=branch.id, role="editor")
    assert caught.value.extra["rule"] == "unique"

    membership = await admin.set_role(
        db, email="gus@example.com", branch_id=branch.id, role="manager"
    )
    assert membership.role is Role.manager
    assert await accounts.role_in(user_id=user.id, branch_id=branch.id) is Role.manager

    await admin.remove_member(db, email="gus@example.com", branch_id=branch.id)
    assert await accounts.role_in(user_id=user.id, branch_id=branch.id) is None
    with pytest.raises(NotFound, match="not a member"):
        await admin.remove_member(db, email="gus@example.com", branch_id=branch.id)
    with pytest.raises(NotFound, match="not a member"):
        await admin.set_role(db, email="gus@example.com", branch_id=branch.id, role="viewer")


async def test_members_refuse_bad_role_and_unknown_branch(db: Database) -> None:
    branch = await admin.create_branch(db, name="Downtown")
    await admin.create_user(db, email="hal@example.com", name="Hal", password="pass-word")
    with pytest.raises(ValidationFailed) as caught:
        await admin.add_member(db, email="hal@example.com", branch_id=branch.id, role="owner")
    assert caught.value.extra == {"field": "role", "rule": "choice"}
    with pytest.raises(NotFound, match="no branch with id 999"):
        await admin.add_member(db, email="hal@example.com", branch_id=999, role="viewer")
    with pytest.raises(NotFound, match="no user"):
        await admin.add_member(db, email="nope@example.com", branch_id=branch.id, role="viewer")


async def test_tokens_create_authenticate_revoke(db: Database, accounts: Accounts) -> None:
    user = await admin.create_user(db, email="ivy@example.com", name="Ivy", password="pass-word")
    first = await admin.create_token(db, email="ivy@example.com", name="export", secret_key=SECRET)
    second = await admin.create_token(db, email="ivy@example.com", name="import", secret_key=SECRET)
    assert first != second and len(first) >= 40

    principal = await accounts.from_bearer(first)
    assert principal is not None
    assert principal.user_id == user.id
    async with db.read() as s:
        stored = set(await s.scalars(select(ApiToken.token_hash)))
    assert first not in stored and second not in stored  # only hashes are kept

    listed = await admin.list_tokens(db, email="ivy@example.com")
    assert [(t.name, t.revoked_at) for t in listed] == [("export", None), ("import", None)]
    assert principal.token_id == listed[0].id

    await admin.revoke_token(db, token_id=listed[0].id)
    await admin.revoke_token(db, token_id=listed[0].id)  # again: no error, no change
    assert await accounts.from_bearer(first) is None
    assert await accounts.from_bearer(second) is not None
    assert (await admin.list_tokens(db))[0].revoked_at is not None

    with pytest.raises(NotFound, match="no API token with id 12345"):
        await admin.revoke_token(db, token_id=12345)


async def test_no_token_for_a_deactivated_user(db: Database) -> None:
    await admin.create_user(
        db, email="jo@example.com", name="Jo", password="pass-word", active=False
    )
    with pytest.raises(ValidationFailed) as caught:
        await admin.create_token(db, email="jo@example.com", name="x", secret_key=SECRET)
    assert caught.value.extra == {"field": "email", "rule": "inactive"}
