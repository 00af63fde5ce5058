"""Administration: users, branches, memberships and API tokens.

Used by the command line (``warrantysync users|members|branches|tokens``) and
by tests to build data. Every function takes the ``Database`` and keyword
arguments, runs in one transaction, and reports bad input as
``ValidationFailed`` (naming the field and the rule) and unknown users,
branches or tokens as ``NotFound``.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio.to_thread
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import NotFound, ValidationFailed
from ..storage.db import Database
from ..storage.models import ApiToken, Branch, Membership, Role, Session, User, utcnow
from .accounts import check_password_policy, hash_password, token_hash


@dataclass(frozen=True, slots=True)
class UserSummary:
    """A user and the branches they belong to, as ``users list`` shows them."""

    id: int
    email: str
    name: str
    is_active: bool
    memberships: tuple[tuple[int, str, Role], ...]  # (branch id, branch name, role)


@dataclass(frozen=True, slots=True)
class TokenSummary:
    id: int
    email: str
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


# -- input rules ---------------------------------------------------------------


def normalize_email(email: str) -> str:
    """Trimmed and lowercased, as login compares it; must look like an address."""
    value = email.strip().lower()
    if not value:
        raise ValidationFailed("email: must not be empty", field="email", rule="required")
    if len(value) > 254:
        raise ValidationFailed(
            "email: must be at most 254 characters", field="email", rule="max_length"
        )
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(
            f"email: is not a valid email address ({exc})", field="email", rule="email"
        ) from None
    return value


def _name(value: str, *, field: str = "name", max_len: int = 120) -> str:
    value = value.strip()
    if not value:
        raise ValidationFailed(f"{field}: must not be empty", field=field, rule="required")
    if len(value) > max_len:
        raise ValidationFailed(
            f"{field}: must be at most {max_len} characters", field=field, rule="max_length"
        )
    return value


def _role(role: str | Role) -> Role:
    try:
        return Role(role)
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise ValidationFailed(
            f"role: must be one of {allowed}", field="role", rule="choice"
        ) from None


def _timezone(value: str) -> str:
    value = value.strip()
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(
            f"timezone: {value!r} is not an IANA time zone (like Europe/Berlin)",
            field="timezone",
            rule="timezone",
        ) from None
    return value


# -- lookups -------------------------------------------------------------------


async def _user(session: AsyncSession, email: str) -> User:
    address = email.strip().lower()
    user = await session.scalar(select(User).where(User.email == address))
    if user is None:
        raise NotFound(f"no user with email {address}")
    return user


async def _branch(session: AsyncSession, branch_id: int) -> Branch:
    branch = await session.get(Branch, branch_id)
    if branch is None:
        raise NotFound(f"no branch with id {branch_id}")
    return branch


async def _membership(session: AsyncSession, user: User, branch: Branch) -> Membership:
    membership = await session.get(Membership, (user.id, branch.id))
    if membership is None:
        raise NotFound(f"{user.email} is not a member of branch {branch.id} ({branch.name})")
    return membership


# -- users ---------------------------------------------------------------------


async def create_user(
    db: Database, *, email: str, name: str, password: str, active: bool = True
) -> User:
    address = normalize_email(email)
    clean_name = _name(name)
    check_password_policy(password)
    # argon2 is deliberately slow; keep it off the event loop.
    password_hash = await anyio.to_thread.run_sync(hash_password, password)
    duplicate = ValidationFailed(
        f"email: a user with email {address} already exists", field="email", rule="unique"
    )
    try:
        async with db.write() as session:
            if await session.scalar(select(User.id).where(User.email == address)) is not None:
                raise duplicate
            user = User(
                email=address, name=clean_name, password_hash=password_hash, is_active=active
            )
            session.add(user)
    except IntegrityError:  # created concurrently between the check and the insert
        raise duplicate from None
    return user


async def deactivate_user(db: Database, *, email: str) -> User:
    """Block the login and revoke every session and API token of the user at once."""
    now = utcnow()
    async with db.write() as session:
        user = await _user(session, email)
        user.is_active = False
        await session.execute(
            update(Session)
            .where(Session.user_id == user.id, Session.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        await session.execute(
            update(ApiToken)
            .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return user


async def set_password(db: Database, *, email: str, password: str) -> tuple[User, int]:
    """A new password for the user; every session of theirs ends (API tokens stay).

    Returns the user and how many sessions were ended.
    """
    check_password_policy(password)
    password_hash = await anyio.to_thread.run_sync(hash_password, password)
    async with db.write() as session:
        user = await _user(session, email)
        user.password_hash = password_hash
        ended = await session.execute(
            update(Session)
            .where(Session.user_id == user.id, Session.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    return user, int(getattr(ended, "rowcount", 0) or 0)


async def activate_user(db: Database, *, email: str) -> User:
    """Allow a deactivated user to log in again (old sessions and tokens stay revoked)."""
    async with db.write() as session:
        user = await _user(session, email)
        user.is_active = True
    return user


async def list_users(db: Database) -> list[UserSummary]:
    async with db.read() as session:
        users = (await session.scalars(select(User).order_by(User.id))).all()
        rows = (
            await session.execute(
                select(Membership.user_id, Branch.id, Branch.name, Membership.role)
                .join(Branch, Branch.id == Membership.branch_id)
                .order_by(Branch.id)
            )
        ).all()
    by_user: dict[int, list[tuple[int, str, Role]]] = {}
    for user_id, branch_id, branch_name, role in rows:
        by_user.setdefault(user_id, []).append((branch_id, branch_name, role))
    return [
        UserSummary(u.id, u.email, u.name, u.is_active, tuple(by_user.get(u.id, ()))) for u in users
    ]


# -- branches and memberships ----------------------------------------------------


async def create_branch(db: Database, *, name: str, timezone: str = "UTC") -> Branch:
    branch = Branch(name=_name(name), timezone=_timezone(timezone), last_event_id=0)
    async with db.write() as session:
        session.add(branch)
    return branch


async def list_branches(db: Database) -> list[Branch]:
    async with db.read() as session:
        rows = await session.scalars(select(Branch).order_by(Branch.id))
        return list(rows)


async def add_member(db: Database, *, email: str, branch_id: int, role: str | Role) -> Membership:
    clean_role = _role(role)
    async with db.write() as session:
        user = await _user(session, email)
        branch = await _branch(session, branch_id)
        if await session.get(Membership, (user.id, branch.id)) is not None:
            raise ValidationFailed(
                f"{user.email} is already a member of branch {branch.id} ({branch.name});"
                " change the role instead",
                field="email",
                rule="unique",
            )
        membership = Membership(user_id=user.id, branch_id=branch.id, role=clean_role)
        session.add(membership)
    return membership


async def remove_member(db: Database, *, email: str, branch_id: int) -> None:
    """Take the user off the branch; their open streams there close within one heartbeat."""
    async with db.write() as session:
        user = await _user(session, email)
        branch = await _branch(session, branch_id)
        await session.delete(await _membership(session, user, branch))


async def set_role(db: Database, *, email: str, branch_id: int, role: str | Role) -> Membership:
    clean_role = _role(role)
    async with db.write() as session:
        user = await _user(session, email)
        branch = await _branch(session, branch_id)
        membership = await _membership(session, user, branch)
        membership.role = clean_role
    return membership


# -- API tokens ----------------------------------------------------------------


async def create_token(db: Database, *, email: str, name: str, secret_key: str) -> str:
    """Issue a bearer token and return it; only its hash is kept, so show it now or never."""
    clean_name = _name(name)
    token = secrets.token_urlsafe(32)
    async with db.write() as session:
        user = await _user(session, email)
        if not user.is_active:
            raise ValidationFailed(
                f"email: {user.email} is deactivated", field="email", rule="inactive"
            )
        session.add(
            ApiToken(token_hash=token_hash(token, secret_key), user_id=user.id, name=clean_name)
        )
    return token


async def revoke_token(db: Database, *, token_id: int) -> None:
    """Revoke at once; revoking an already revoked token changes nothing."""
    async with db.write() as session:
        api_token = await session.get(ApiToken, token_id)
        if api_token is None:
            raise NotFound(f"no API token with id {token_id}")
        if api_token.revoked_at is None:
            api_token.revoked_at = utcnow()


async def list_tokens(db: Database, *, email: str | None = None) -> list[TokenSummary]:
    async with db.read() as session:
        query = (
            select(ApiToken, User.email)
            .join(User, User.id == ApiToken.user_id)
            .order_by(ApiToken.id)
        )
        if email is not None:
            query = query.where(User.id == (await _user(session, email)).id)
        rows = (await session.execute(query)).all()
    return [TokenSummary(t.id, address, t.name, t.created_at, t.revoked_at) for t, address in rows]


__all__ = [
    "TokenSummary",
    "UserSummary",
    "activate_user",
    "add_member",
    "create_branch",
    "create_token",
    "create_user",
    "deactivate_user",
    "list_branches",
    "list_tokens",
    "list_users",
    "normalize_email",
    "remove_member",
    "revoke_token",
    "set_role",
]
