"""Who made a save and what they may do there, remembered between saves, never trusted alone.

A save (``PATCH /api/cases/{id}``) used to read the caller's credential and
their membership of the case's branch in two transactions of their own before
its write transaction. ``Passes`` remembers the outcome of those two reads;
a save that finds both here skips them, and its write transaction confirms
them instead (``confirm``): one statement, inside the transaction that writes,
that finds the credential unrevoked and unexpired, the user active and their
role in the case's branch high enough. Anything that took the access away —
a logout, a password change ending other sessions, a deactivation, a revoked
API token, a membership removed or lowered, on this process or any other, or
through the CLI — has committed before that statement runs or is serialised
after the write, exactly as with the reads it replaces. When the statement
finds nothing, the transaction rolls back (``Unconfirmed``) and the save is
answered as if nothing had been remembered (web/routes/cases.py).

Nothing here is a security decision on its own, so an entry needs no
invalidation to be safe; entries still age out after ``max_age`` seconds so
that a session's idle expiry keeps sliding (services/accounts.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from typing import TYPE_CHECKING

from sqlalchemy import Select, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from ..storage.models import ApiToken, Membership, Role, Session, User, WarrantyCase, utcnow

if TYPE_CHECKING:
    from .accounts import Principal

__all__ = ["Passes", "Unconfirmed"]

# Enough for every editor of a large deployment; a full map starts again empty.
MAX_ENTRIES = 10_000
_AT_LEAST = {
    Role.viewer: (Role.viewer, Role.editor, Role.manager),
    Role.editor: (Role.editor, Role.manager),
    Role.manager: (Role.manager,),
}


class Unconfirmed(Exception):
    """The remembered caller or access no longer holds; the transaction rolls back."""


class Passes:
    def __init__(
        self, *, max_age: float, session_ttl: dt.timedelta, max_entries: int = MAX_ENTRIES
    ) -> None:
        self.max_age = max_age
        self.session_ttl = session_ttl
        self.max_entries = max_entries
        # credential's token hash -> (what from_bearer/from_cookie found, when)
        self._principals: dict[str, tuple[Principal, float]] = {}
        # (user id, case id) -> (the case's branch id, the user's role there)
        self._access: dict[tuple[int, int], tuple[int, Role]] = {}

    def principal(self, key: str) -> Principal | None:
        found = self._principals.get(key)
        if found is None or time.monotonic() - found[1] > self.max_age:
            return None
        return found[0]

    def remember_principal(self, key: str, principal: Principal) -> None:
        if len(self._principals) >= self.max_entries:
            self._principals.clear()
        self._principals[key] = (principal, time.monotonic())

    def access(self, *, user_id: int, case_id: int) -> tuple[int, Role] | None:
        return self._access.get((user_id, case_id))

    def remember_access(self, *, user_id: int, case_id: int, branch_id: int, role: Role) -> None:
        if len(self._access) >= self.max_entries:
            self._access.clear()
        self._access[(user_id, case_id)] = (branch_id, role)

    def forget(self, *, key: str | None, user_id: int, case_id: int) -> None:
        if key is not None:
            self._principals.pop(key, None)
        self._access.pop((user_id, case_id), None)

    async def confirm(
        self,
        session: AsyncSession,
        principal: Principal,
        *,
        case_id: int,
        minimum: Role,
    ) -> None:
        """Raise ``Unconfirmed`` unless the credential and the access still hold, now.

        Run inside the write transaction, before its first write. The user's
        name is compared too, so events and audit rows never name someone by
        a name they have dropped.
        """
        params: dict[str, object] = {"b_user_id": principal.user_id, "b_case_id": case_id}
        if principal.session_id is not None:
            kind = "session"
            params |= {"b_cred_id": principal.session_id, "b_idle": utcnow() - self.session_ttl}
        elif principal.token_id is not None:
            kind = "token"
            params["b_cred_id"] = principal.token_id
        else:
            raise Unconfirmed("no credential to confirm")
        query = _confirmation(kind, minimum)
        if await session.scalar(query, params) != principal.name:
            raise Unconfirmed("the remembered access no longer holds")


@functools.cache
def _confirmation(kind: str, minimum: Role) -> Select[str]:
    """``confirm``'s statement, built once per credential kind and role."""
    query = (
        select(User.name)
        .join(Membership, Membership.user_id == User.id)
        .join(WarrantyCase, WarrantyCase.branch_id == Membership.branch_id)
        .where(
            User.id == bindparam("b_user_id"),
            User.is_active.is_(True),
            WarrantyCase.id == bindparam("b_case_id"),
            Membership.role.in_(_AT_LEAST[minimum]),
        )
    )
    if kind == "session":
        return query.join(Session, Session.user_id == User.id).where(
            Session.id == bindparam("b_cred_id"),
            Session.revoked_at.is_(None),
            Session.last_seen_at > bindparam("b_idle"),
        )
    return query.join(ApiToken, ApiToken.user_id == User.id).where(
        ApiToken.id == bindparam("b_cred_id"), ApiToken.revoked_at.is_(None)
    )
