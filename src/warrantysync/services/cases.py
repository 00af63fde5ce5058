"""Warranty cases: snapshot, create, patch, delete and undelete, history.

A PATCH is decided here, in the contract's order (docs/protocol.md, PATCH):
the fields' rules (422), the field locks (423, 409 ``lock_lost``), then the
``expected`` values (409 ``conflict``) and the commit.

Every change runs in one write transaction that also bumps ``version``,
writes the audit rows, appends the outbox event and (when asked) stores the
idempotency record; the event is published to live streams only after the
commit. The ``expected`` check reads the row under ``FOR UPDATE`` (or inside
SQLite's ``BEGIN IMMEDIATE``), so check and write are atomic: the database is
the fence against late writers, and the only one while the locks cannot be
checked (docs/protocol.md, "Redis unreachable").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import RowMapping, bindparam, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from ..casefields import COLUMNS
from ..errors import CaseNotFound, StaleVersion, Unavailable
from ..jsonutil import dumps_str, loads
from ..storage import outbox
from ..storage.db import Database
from ..storage.models import AuditEntry, Branch, Membership, User, WarrantyCase, table, utcnow
from . import caselist, csvio
from . import fields as F
from .events import CASE_CREATED, CASE_DELETED, CASE_UPDATED, Event
from .idempotency import Answer, IdempotencyGuard
from .locks import LockManager

Publish = Callable[[Event], Awaitable[None]]
PRUNE_EVERY = 100
EXPORT_PAGE = 1000
# For changes to fields outside F.CONTEXT_FIELDS, whose rules never read it.
NO_CONTEXT = F.Context(timezone="UTC", members={})
NO_TOKENS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is changing something, as events and audit rows name them."""

    id: int
    name: str
    client_id: str | None = None

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


# The hot paths (read, patch) use Core statements on the tables: the ORM's
# identity map and unit of work cost more CPU than the SQL they run. The
# save's statements are built once, with bound parameters: building one and
# deriving its cache key cost 40-150 µs of CPU each time.
CASES = table(WarrantyCase)
AUDIT = table(AuditEntry)
_LIVE_CASE = select(CASES).where(CASES.c.id == bindparam("b_case_id"), CASES.c.deleted_at.is_(None))
_LIVE_CASE_FOR_UPDATE = _LIVE_CASE.with_for_update()
# SET takes the columns named in the parameters (_apply).
_UPDATE_CASE = update(CASES).where(CASES.c.id == bindparam("b_case_id"))
_INSERT_AUDIT = insert(AUDIT)


def case_json(case: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    return {column: F.to_json(case[column]) for column in COLUMNS}


class CaseService:
    def __init__(
        self,
        db: Database,
        *,
        publish: Publish,
        replay_window: int,
        locks: LockManager | None = None,
    ) -> None:
        """``locks`` None: no field can be locked, so none is checked (loading data, tests)."""
        self.db = db
        self.publish = publish
        self.replay_window = replay_window
        self.locks = locks

    # -- reads -----------------------------------------------------------------

    async def snapshot(self, *, branch_id: int) -> tuple[list[dict[str, Any]], int]:
        """All live cases and the event id they are consistent with."""
        async with self.db.snapshot() as session:
            head = await outbox.head(session, branch_id=branch_id)
            rows = await session.execute(
                select(CASES)
                .where(CASES.c.branch_id == branch_id, CASES.c.deleted_at.is_(None))
                .order_by(CASES.c.id)
            )
            return [case_json(row._mapping) for row in rows], head

    async def page(self, *, branch_id: int, query: caselist.ListQuery) -> tuple[caselist.Page, int]:
        """One page of the list ``query`` asks for, and the event id it is consistent with."""
        async with self.db.snapshot() as session:
            head = await outbox.head(session, branch_id=branch_id)
            members = await _members_for(session, branch_id=branch_id, query=query)
            rows, more, total = await caselist.read_page(
                session, branch_id=branch_id, query=query, members=members
            )
        keys = [caselist.key_of(query, row) for row in rows]
        cursors = [caselist.encode_cursor(query, key.value, key.id) for key in keys]
        page = caselist.Page(
            cases=[case_json(row._mapping) for row in rows],
            cursors=cursors,
            next_cursor=cursors[-1] if more and cursors else None,
            total=total,
        )
        return page, head

    async def export(self, *, branch_id: int, query: caselist.ListQuery) -> AsyncIterator[str]:
        """The whole list as CSV text (services/csvio.py), ``EXPORT_PAGE`` rows per read.

        Each page is its own short read, so a slow download never holds a
        transaction open; the keyset cursor keeps it to each case once.
        """
        writer = csvio.Writer()
        yield writer.header()
        query = dataclasses.replace(query, limit=EXPORT_PAGE, after=None, until=None)
        async with self.db.read() as session:
            members = await _members_for(session, branch_id=branch_id, query=query)
        while True:
            async with self.db.read() as session:
                rows, more, _total = await caselist.read_page(
                    session, branch_id=branch_id, query=query, members=members, count=False
                )
            if rows:
                yield writer.rows(row._mapping for row in rows)
            if not more:
                return
            query = dataclasses.replace(query, after=caselist.key_of(query, rows[-1]))

    async def get(self, *, case_id: int) -> dict[str, Any]:
        async with self.db.read() as session:
            return case_json(await _live_case(session, case_id=case_id))

    async def history(
        self, *, case_id: int, limit: int, before: int | None
    ) -> list[dict[str, Any]]:
        async with self.db.read() as session:
            query = (
                select(AuditEntry, User.name)
                .outerjoin(User, User.id == AuditEntry.user_id)
                .where(AuditEntry.case_id == case_id)
                .order_by(AuditEntry.id.desc())
                .limit(limit)
            )
            if before is not None:
                query = query.where(AuditEntry.id < before)
            rows = (await session.execute(query)).all()
        return [
            {
                "id": entry.id,
                "field": entry.field,
                "old": _json_or_none(entry.old),
                "new": _json_or_none(entry.new),
                "user": None if entry.user_id is None else {"id": entry.user_id, "name": name},
                "at": entry.at,
                "version": entry.version,
                "restored_from": entry.restored_from,
            }
            for entry, name in rows
        ]

    # -- writes ----------------------------------------------------------------

    async def create(
        self, *, branch_id: int, values: Mapping[str, Any], actor: Actor
    ) -> dict[str, Any]:
        async with self.db.write() as session:
            ctx = await field_context(session, branch_id=branch_id)
            clean = F.validate(values, ctx)
            if "customer_name" not in clean:
                F.validate({"customer_name": ""}, ctx)  # raises the "required" error
            number = await outbox.next_counter(session, name="case_number")
            now = utcnow()
            case = WarrantyCase(
                branch_id=branch_id,
                case_number=f"WC-{number:06d}",
                version=1,
                created_at=now,
                updated_at=now,
                updated_by=actor.id,
                **clean,
            )
            session.add(case)
            await session.flush()
            body = case_json({column: getattr(case, column) for column in COLUMNS})
            await _audit(
                session, case.id, 1, {f: (None, clean[f]) for f in sorted(clean)}, actor, now
            )
            event = await self._append(
                session,
                branch_id,
                CASE_CREATED,
                {"case": body, "by": actor.ref(), "client_id": actor.client_id},
            )
        await self.publish(event)
        return body

    async def patch(
        self,
        *,
        case_id: int,
        changes: Mapping[str, Any],
        expected: Mapping[str, Any],
        actor: Actor,
        lock_tokens: Mapping[str, str] = NO_TOKENS,
        branch_id: int | None = None,
        idempotency: IdempotencyGuard | None = None,
        restored_from: int | None = None,
        confirm: Callable[[AsyncSession], Awaitable[None]] | None = None,
    ) -> dict[str, Any]:
        """Validate, check the locks, then commit; returns the case after the change.

        The order is the contract's: invalid input (422) is reported before
        lock problems (423/409 ``lock_lost``), which come before a stale
        ``expected`` value (409 ``conflict``). ``lock_tokens`` and
        ``actor.client_id`` say which locks are the caller's. ``branch_id``
        is the case's branch when the caller has already looked it up.

        ``idempotency`` stores the answer in the transaction of the change.
        If an identical twin stored its answer first, the write fails with
        ``IntegrityError`` and nothing of it commits (services/idempotency.py).
        ``restored_from`` marks the change as a restore of that history
        entry (services/restore.py). ``confirm`` runs first in the write
        transaction; whatever it raises rolls the transaction back
        (services/passes.py).
        """
        if branch_id is None or not F.CONTEXT_FIELDS.isdisjoint(changes):
            async with self.db.read() as session:
                if branch_id is None:
                    branch_id = (await _live_case(session, case_id=case_id))["branch_id"]
                ctx = await field_context(session, branch_id=branch_id)
        else:
            ctx = NO_CONTEXT
        clean = F.validate(changes, ctx)
        F.check_subset("expected", expected, clean)
        await self._check_locks(
            case_id=case_id, fields=clean, expected=expected, tokens=lock_tokens, actor=actor
        )
        event: Event | None = None
        async with self.db.write() as session:
            if confirm is not None:
                await confirm(session)
            case = await _live_case(session, case_id=case_id, for_update=True)
            await _check_expected(session, case, expected)
            changed = {f: v for f, v in clean.items() if case[f] != v}
            if changed:
                event = await self._apply(session, case, changed, actor, restored_from)
            body = case_json(case)
            if idempotency is not None:
                await idempotency.keep(session, Answer(200, body))
        if event is not None:
            await self.publish(event)
        return body

    async def _check_locks(
        self,
        *,
        case_id: int,
        fields: Mapping[str, Any],
        expected: Mapping[str, Any],
        tokens: Mapping[str, str],
        actor: Actor,
    ) -> None:
        """Refuse a change the field locks forbid (423 before 409 ``lock_lost``).

        While the locks cannot be checked (Redis unreachable) only a change
        fenced by ``expected`` on every field is safe: the database checks
        those atomically with the write. Anything else is 503 with
        ``Retry-After`` (docs/protocol.md, PATCH).
        """
        if self.locks is None:
            return
        try:
            await self.locks.check_write(
                case_id=case_id,
                fields=fields,
                user_id=actor.id,
                client_id=actor.client_id,
                tokens=tokens,
            )
        except Unavailable:
            if not all(field in expected for field in fields):
                raise Unavailable(
                    "locks cannot be checked right now; retry, or send expected values",
                    retry_after=2,
                ) from None

    async def delete(self, *, case_id: int, actor: Actor) -> None:
        async with self.db.write() as session:
            case = await _live_case(session, case_id=case_id, for_update=True)
            now = utcnow()
            version = case["version"] + 1
            await session.execute(
                update(CASES)
                .where(CASES.c.id == case_id)
                .values(deleted_at=now, version=version, updated_at=now, updated_by=actor.id)
            )
            await _audit(session, case_id, version, {"deleted": (False, True)}, actor, now)
            event = await self._append(
                session,
                case["branch_id"],
                CASE_DELETED,
                {"case_id": case_id, "by": actor.ref(), "client_id": actor.client_id},
            )
        await self.publish(event)

    async def undelete(
        self, *, case_id: int, actor: Actor, idempotency: IdempotencyGuard | None = None
    ) -> dict[str, Any]:
        """Bring a deleted case back from the trash, number and history intact.

        A change like any other: ``version`` + 1, an audit row (``deleted``
        true → false) by ``actor``, and a ``case-created`` event with
        ``restored: true`` so every client, old ones too, shows it again
        (docs/protocol.md, "Trash"). ``CaseNotFound`` unless it is in the trash.
        """
        async with self.db.write() as session:
            query = select(CASES).where(CASES.c.id == case_id, CASES.c.deleted_at.is_not(None))
            row = (await session.execute(query.with_for_update())).first()
            if row is None:
                raise CaseNotFound("no such case in the trash")
            case = dict(row._mapping)
            now = utcnow()
            back = {
                "deleted_at": None,
                "version": case["version"] + 1,
                "updated_at": now,
                "updated_by": actor.id,
            }
            case.update(back)
            await session.execute(update(CASES).where(CASES.c.id == case_id).values(**back))
            await _audit(session, case_id, case["version"], {"deleted": (True, False)}, actor, now)
            body = case_json(case)
            payload = {
                "case": body,
                "by": actor.ref(),
                "client_id": actor.client_id,
                "restored": True,
            }
            event = await self._append(session, case["branch_id"], CASE_CREATED, payload)
            if idempotency is not None:
                await idempotency.keep(session, Answer(200, body))
        await self.publish(event)
        return body

    async def _apply(
        self,
        session: AsyncSession,
        case: dict[str, Any],
        changed: dict[str, Any],
        actor: Actor,
        restored_from: int | None = None,
    ) -> Event:
        """Write ``changed`` and its audit rows; ``case`` is updated to match."""
        now = utcnow()
        version = case["version"] + 1
        changes = {f: (case[f], v) for f, v in changed.items()}
        await _audit(session, case["id"], version, changes, actor, now, restored_from)
        case.update(changed, version=version, updated_at=now, updated_by=actor.id)
        await session.execute(
            _UPDATE_CASE,
            {
                **changed,
                "version": version,
                "updated_at": now,
                "updated_by": actor.id,
                "b_case_id": case["id"],
            },
        )
        payload = {
            "case_id": case["id"],
            "changes": {f: F.to_json(v) for f, v in changed.items()},
            "version": version,
            # Beyond the contract's minimum, so clients can show "updated … ago".
            "updated_at": F.to_json(now),
            "by": actor.ref(),
            "client_id": actor.client_id,
        }
        if restored_from is not None:
            payload["restored_from"] = restored_from
        return await self._append(session, case["branch_id"], CASE_UPDATED, payload)

    async def _append(
        self, session: AsyncSession, branch_id: int, kind: str, payload: dict[str, Any]
    ) -> Event:
        data = dumps_str(payload)
        event_id = await outbox.append_event(session, branch_id=branch_id, kind=kind, data=data)
        if event_id % PRUNE_EVERY == 0:
            await outbox.prune(session, branch_id=branch_id, keep=self.replay_window)
        return Event(branch_id, kind, data.encode(), event_id)


async def _live_case(
    session: AsyncSession, *, case_id: int, for_update: bool = False
) -> dict[str, Any]:
    query = _LIVE_CASE_FOR_UPDATE if for_update else _LIVE_CASE
    row = (await session.execute(query, {"b_case_id": case_id})).first()
    if row is None:
        raise CaseNotFound("no such case")
    return dict(row._mapping)


async def _members_for(
    session: AsyncSession, *, branch_id: int, query: caselist.ListQuery
) -> list[tuple[int, str]]:
    """The branch's members by id and name, when the order needs them (the assignee's)."""
    if query.sort != "assignee_id":
        return []
    found = await session.execute(
        select(User.id, User.name)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.branch_id == branch_id)
    )
    return [(uid, name) for uid, name in found]


async def field_context(session: AsyncSession, *, branch_id: int) -> F.Context:
    timezone = await session.scalar(select(Branch.timezone).where(Branch.id == branch_id))
    members = await session.execute(
        select(Membership.user_id, Membership.role).where(Membership.branch_id == branch_id)
    )
    return F.Context(timezone=timezone or "UTC", members={uid: role.value for uid, role in members})


async def _check_expected(
    session: AsyncSession, case: Mapping[str, Any], expected: Mapping[str, Any]
) -> None:
    # Compared in JSON form: the client echoes what the server once sent it.
    current = {f: F.to_json(case[f]) for f in expected}
    stale = [f for f, value in expected.items() if current[f] != value]
    if not stale:
        return
    by = None
    if (updated_by := case["updated_by"]) is not None:
        name = await session.scalar(select(User.name).where(User.id == updated_by))
        by = {"id": updated_by, "name": name}
    fields = ", ".join(sorted(stale))
    raise StaleVersion(
        f"{fields}: changed by someone else since you loaded it",
        current={f: current[f] for f in stale},
        by=by,
    )


async def _audit(
    session: AsyncSession,
    case_id: int,
    version: int,
    changes: Mapping[str, tuple[Any, Any]],
    actor: Actor,
    at: dt.datetime,
    restored_from: int | None = None,
) -> None:
    """One audit row per field, ``changes`` mapping each field to (old, new)."""
    rows = [
        {
            "case_id": case_id,
            "field": field,
            "old": dumps_str(F.to_json(old)),
            "new": dumps_str(F.to_json(new)),
            "user_id": actor.id,
            "at": at,
            "version": version,
            "restored_from": restored_from,
        }
        for field, (old, new) in changes.items()
    ]
    await session.execute(_INSERT_AUDIT, rows)


def _json_or_none(raw: str | None) -> Any:
    return None if raw is None else loads(raw)
