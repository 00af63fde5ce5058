"""Users, passwords, browser sessions, API tokens and branch access.

Session cookies and API tokens are random opaque strings; the database keeps
only their SHA-256, so a leaked backup holds nothing that logs anyone in.
Password checks run in a worker thread (argon2 is deliberately slow) and an
unknown email is checked against a dummy hash so a failure takes the same
time whether or not the account exists.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from ..errors import Forbidden, InvalidCredentials, NotFound, ValidationFailed
from ..storage.db import Database
from ..storage.models import (
    ApiToken,
    Branch,
    Membership,
    Role,
    Session,
    User,
    WarrantyCase,
    utcnow,
)
from .passes import Passes

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a real password, only for timing")
# Refreshing last_seen_at on every request would be a write per request.
TOUCH_EVERY = dt.timedelta(seconds=60)
# A new password (docs/protocol.md, "Changing the password"): long enough to
# resist guessing; at most what a login reads, so it can always be used.
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024
# Ids are 32-bit INTEGER columns: a larger id from a URL names nothing (and
# would make the database driver raise instead of finding no row).
MAX_ID = 2**31 - 1


def check_password_policy(password: str, *, field: str = "password") -> None:
    """The password policy, for every place a person sets a password.

    At least 8 characters, not only whitespace, and at most what a login reads
    (``PASSWORD_MAX_LENGTH``): a longer one could be set but never used.
    """
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ValidationFailed(
            f"{field}: must be at least {PASSWORD_MIN_LENGTH} characters",
            field=field,
            rule="min_length",
        )
    if not password.strip():
        raise ValidationFailed(f"{field}: must not be only whitespace", field=field, rule="blank")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise ValidationFailed(
            f"{field}: must be at most {PASSWORD_MAX_LENGTH} characters",
            field=field,
            rule="max_length",
        )


def hash_password(password: str) -> str:
    """The argon2 hash of ``password``; the policy is :func:`check_password_policy`.

    Apart from the policy so that ``warrantysync demo`` can give its documented
    accounts the password ``demo``.
    """
    return _hasher.hash(password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_hash(token: str, key: str) -> str:
    """HMAC-SHA256 of a session or API token under the server's secret key.

    A copy of the database alone cannot even check a guessed token; rotating
    ``SECRET_KEY`` signs everyone out and invalidates every API token.
    """
    return hmac.new(key.encode(), token.encode(), hashlib.sha256).hexdigest()


def _pass_key(digest: str, *, bearer: bool) -> str:
    """The memory's key for a token (services/passes.py), from its ``token_hash``.

    The kind is part of the key: an API token sent as a cookie is no session.
    """
    return ("b:" if bearer else "c:") + digest


_RANK = {Role.viewer: 0, Role.editor: 1, Role.manager: 2}


def has_role(role: Role, minimum: Role) -> bool:
    """The one place the role ladder viewer < editor < manager is defined."""
    return _RANK[role] >= _RANK[minimum]


def require_role(role: Role, minimum: Role, action: str) -> None:
    if not has_role(role, minimum):
        raise Forbidden(f"a {role.value} cannot {action or 'do this'}")


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request."""

    user_id: int
    name: str
    email: str
    session_id: int | None = None
    csrf_token: str | None = None
    token_id: int | None = None
    # True when this request slid the session's idle expiry forward, so the
    # cookie's Max-Age should slide with it.
    refreshed: bool = False

    @property
    def uses_cookie(self) -> bool:
        return self.session_id is not None


@dataclass(frozen=True, slots=True)
class NewSession:
    token: str
    csrf_token: str
    principal: Principal


class Accounts:
    def __init__(self, db: Database, *, session_ttl: float, secret_key: str) -> None:
        self.db = db
        self.secret_key = secret_key
        self.session_ttl = dt.timedelta(seconds=session_ttl)
        # Touch well within the idle lifetime, or a short TTL would expire active sessions.
        self.touch_every = min(TOUCH_EVERY, self.session_ttl / 4)
        # Younger than the touch interval, so a remembered session still slides.
        self.passes = Passes(max_age=self.touch_every.total_seconds(), session_ttl=self.session_ttl)

    # -- login -----------------------------------------------------------------

    async def check_password(self, *, email: str, password: str) -> User:
        async with self.db.read() as session:
            user = await session.scalar(select(User).where(User.email == email.strip().lower()))
        password_hash = user.password_hash if user is not None else _DUMMY_HASH
        ok = await anyio.to_thread.run_sync(_verify, password_hash, password)
        if user is None or not ok or not user.is_active:
            raise InvalidCredentials("email or password is wrong")
        return user

    async def open_session(self, user: User) -> NewSession:
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        async with self.db.write() as session:
            row = Session(
                token_hash=token_hash(token, self.secret_key), user_id=user.id, csrf_token=csrf
            )
            session.add(row)
            await session.flush()
            principal = Principal(
                user.id, user.name, user.email, session_id=row.id, csrf_token=csrf
            )
        return NewSession(token, csrf, principal)

    async def change_password(
        self, principal: Principal, *, current_password: str, new_password: str
    ) -> int:
        """Set a new password and end every other session of the user; returns how many.

        ``InvalidCredentials`` when ``current_password`` is wrong. The session
        the change was made from stays signed in; API tokens are untouched.
        """
        check_password_policy(new_password, field="new_password")
        async with self.db.read() as session:
            password_hash = await session.scalar(
                select(User.password_hash).where(User.id == principal.user_id)
            )
        ok = await anyio.to_thread.run_sync(_verify, password_hash or _DUMMY_HASH, current_password)
        if password_hash is None or not ok:
            raise InvalidCredentials("the current password is wrong")
        new_hash = await anyio.to_thread.run_sync(_hasher.hash, new_password)
        async with self.db.write() as session:
            await session.execute(
                update(User).where(User.id == principal.user_id).values(password_hash=new_hash)
            )
            others = update(Session).where(
                Session.user_id == principal.user_id, Session.revoked_at.is_(None)
            )
            if principal.session_id is not None:
                others = others.where(Session.id != principal.session_id)
            ended = await session.execute(others.values(revoked_at=utcnow()))
        return int(getattr(ended, "rowcount", 0) or 0)

    async def revoke_session(self, session_id: int) -> None:
        async with self.db.write() as session:
            await session.execute(
                update(Session)
                .where(Session.id == session_id, Session.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )

    # -- per request -----------------------------------------------------------

    def remembered(self, pass_key: str) -> Principal | None:
        """What ``from_bearer``/``from_cookie`` found lately for the token of ``pass_key``.

        Unchecked: only for a caller whose write transaction confirms it
        (services/passes.py).
        """
        return self.passes.principal(pass_key)

    def pass_key(self, token: str, *, bearer: bool) -> str:
        return _pass_key(token_hash(token, self.secret_key), bearer=bearer)

    async def from_cookie(self, token: str) -> Principal | None:
        now = utcnow()
        digest = token_hash(token, self.secret_key)
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(Session, User)
                    .join(User, User.id == Session.user_id)
                    .where(
                        Session.token_hash == digest,
                        Session.revoked_at.is_(None),
                        Session.last_seen_at > now - self.session_ttl,
                        User.is_active.is_(True),
                    )
                )
            ).first()
        if row is None:
            return None
        sess, user = row
        refreshed = now - sess.last_seen_at > self.touch_every
        if refreshed:
            async with self.db.write() as session:
                await session.execute(
                    update(Session).where(Session.id == sess.id).values(last_seen_at=now)
                )
        principal = Principal(
            user.id, user.name, user.email, session_id=sess.id, csrf_token=sess.csrf_token
        )
        self.passes.remember_principal(_pass_key(digest, bearer=False), principal)
        return dataclasses.replace(principal, refreshed=refreshed)

    async def from_bearer(self, token: str) -> Principal | None:
        digest = token_hash(token, self.secret_key)
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(ApiToken, User)
                    .join(User, User.id == ApiToken.user_id)
                    .where(
                        ApiToken.token_hash == digest,
                        ApiToken.revoked_at.is_(None),
                        User.is_active.is_(True),
                    )
                )
            ).first()
        if row is None:
            return None
        api_token, user = row
        principal = Principal(user.id, user.name, user.email, token_id=api_token.id)
        self.passes.remember_principal(_pass_key(digest, bearer=True), principal)
        return principal

    async def live_access(
        self, *, keys: set[tuple[str, int]], branch_ids: set[int]
    ) -> set[tuple[tuple[str, int], int, int]]:
        """Which (credential, user, branch) triples of open streams are still allowed.

        Three queries however many streams are open, run once per heartbeat.
        """
        session_ids = [i for kind, i in keys if kind == "session"]
        token_ids = [i for kind, i in keys if kind == "token"]
        now = utcnow()
        async with self.db.read() as session:
            valid: list[tuple[tuple[str, int], int]] = []
            if session_ids:
                rows = await session.execute(
                    select(Session.id, Session.user_id)
                    .join(User, User.id == Session.user_id)
                    .where(
                        Session.id.in_(session_ids),
                        Session.revoked_at.is_(None),
                        Session.last_seen_at > now - self.session_ttl,
                        User.is_active.is_(True),
                    )
                )
                valid += [(("session", sid), uid) for sid, uid in rows]
            if token_ids:
                rows = await session.execute(
                    select(ApiToken.id, ApiToken.user_id)
                    .join(User, User.id == ApiToken.user_id)
                    .where(
                        ApiToken.id.in_(token_ids),
                        ApiToken.revoked_at.is_(None),
                        User.is_active.is_(True),
                    )
                )
                valid += [(("token", tid), uid) for tid, uid in rows]
            members = set(
                (
                    await session.execute(
                        select(Membership.user_id, Membership.branch_id).where(
                            Membership.branch_id.in_(branch_ids)
                        )
                    )
                ).tuples()
            )
        return {
            (key, uid, bid)
            for key, uid in valid
            for member_uid, bid in members
            if member_uid == uid
        }

    # -- access ----------------------------------------------------------------

    async def role_in(self, *, user_id: int, branch_id: int) -> Role | None:
        async with self.db.read() as session:
            return await session.scalar(
                select(Membership.role).where(
                    Membership.user_id == user_id, Membership.branch_id == branch_id
                )
            )

    async def branch_access(
        self, *, user_id: int, branch_id: int, minimum: Role = Role.viewer, action: str = ""
    ) -> tuple[Branch, Role]:
        """The branch and the caller's role; 404 unless a member, 403 below ``minimum``."""
        branch, role = await self._branch_access(user_id=user_id, branch_id=branch_id)
        require_role(role, minimum, action)
        return branch, role

    async def _branch_access(self, *, user_id: int, branch_id: int) -> tuple[Branch, Role]:
        if not 0 < branch_id <= MAX_ID:
            raise NotFound("no such branch")
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(Branch, Membership.role)
                    .join(Membership, Membership.branch_id == Branch.id)
                    .where(Branch.id == branch_id, Membership.user_id == user_id)
                )
            ).first()
        if row is None:
            raise NotFound("no such branch")
        return row[0], row[1]

    async def case_access(
        self, *, user_id: int, case_id: int, minimum: Role = Role.viewer, action: str = ""
    ) -> tuple[int, Role]:
        """The case's branch and the caller's role; 404 unless visible, 403 below ``minimum``."""
        branch_id, role = await self._case_access(user_id=user_id, case_id=case_id)
        require_role(role, minimum, action)
        return branch_id, role

    async def _case_access(self, *, user_id: int, case_id: int) -> tuple[int, Role]:
        branch_id, role = await self._membership_of_case(user_id, case_id, trashed=False)
        self.passes.remember_access(
            user_id=user_id, case_id=case_id, branch_id=branch_id, role=role
        )
        return branch_id, role

    async def trash_access(self, *, user_id: int, case_id: int) -> int:
        """A trashed case's branch; 404 unless it is in the trash and visible, 403 below manager."""
        branch_id, role = await self._membership_of_case(user_id, case_id, trashed=True)
        require_role(role, Role.manager, "restore deleted cases")
        return branch_id

    async def _membership_of_case(
        self, user_id: int, case_id: int, *, trashed: bool
    ) -> tuple[int, Role]:
        """The case's branch and the user's role there; 404 when either is missing."""
        missing = "no such case in the trash" if trashed else "no such case"
        if not 0 < case_id <= MAX_ID:
            raise NotFound(missing)
        deleted = WarrantyCase.deleted_at
        async with self.db.read() as session:
            row = (
                await session.execute(
                    select(WarrantyCase.branch_id, Membership.role)
                    .join(Membership, Membership.branch_id == WarrantyCase.branch_id)
                    .where(
                        WarrantyCase.id == case_id,
                        deleted.is_not(None) if trashed else deleted.is_(None),
                        Membership.user_id == user_id,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(missing)
        return int(row[0]), row[1]

    async def branches_of(self, *, user_id: int) -> list[dict[str, object]]:
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(Branch.id, Branch.name, Membership.role)
                    .join(Membership, Membership.branch_id == Branch.id)
                    .where(Membership.user_id == user_id)
                    .order_by(Branch.id)
                )
            ).all()
        return [{"id": bid, "name": name, "role": role.value} for bid, name, role in rows]

    async def members(self, *, branch_id: int) -> list[dict[str, object]]:
        async with self.db.read() as session:
            rows = (
                await session.execute(
                    select(User.id, User.name, Membership.role)
                    .join(Membership, Membership.user_id == User.id)
                    .where(Membership.branch_id == branch_id)
                    .order_by(User.name)
                )
            ).all()
        return [{"id": uid, "name": name, "role": role.value} for uid, name, role in rows]
