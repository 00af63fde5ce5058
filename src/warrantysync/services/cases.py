"""Warranty cases: snapshot, create, patch, delete, history.

Every change runs in one write transaction that also bumps ``version``,
writes the audit rows, appends the outbox event and (when asked) stores the
idempotency record; the event is published to live streams only after the
commit. The ``expected`` check reads the row under ``FOR UPDATE`` (or inside
SQLite's ``BEGIN IMMEDIATE``), so check and write are atomic: the database is
the fence against late writers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import CaseNotFound, StaleVersion
from ..jsonutil import dumps_str, loads
from ..storage import outbox
from ..storage.db import Database
from ..storage.models import AuditEntry, Branch, Membership, User, WarrantyCase, utcnow
from . import fields as F
from .events import CASE_CREATED, CASE_DELETED, CASE_UPDATED, Event
from .idempotency import Replay, store_answer

Publish = Callable[[Event], Awaitable[None]]
PRUNE_EVERY = 100

CASE_COLUMNS = (
    "id",
    "branch_id",
    "case_number",
    "customer_name",
    "customer_phone",
    "customer_email",
    "product",
    "serial_number",
    "purchase_date",
    "issue",
    "status",
    "priority",
    "assignee_id",
    "notes",
    "version",
    "created_at",
    "updated_at",
    "updated_by",
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is changing something, as events and audit rows name them."""

    id: int
    name: str
    client_id: str | None = None

    def ref(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


def case_json(case: WarrantyCase) -> dict[str, Any]:
    return {column: F.to_json(getattr(case, column)) for column in CASE_COLUMNS}


class CaseService:
    def __init__(self, db: Database, *, publish: Publish, replay_window: int) -> None:
        self.db = db
        self.publish = publish
        self.replay_window = replay_window

    # -- reads -----------------------------------------------------------------

    async def snapshot(self, *, branch_id: int) -> tuple[list[dict[str, Any]], int]:
        """All live cases and the event id they are consistent with."""
        async with self.db.snapshot() as session:
            head = await outbox.head(session, branch_id=branch_id)
            rows = await session.scalars(
                select(WarrantyCase)
                .where(WarrantyCase.branch_id == branch_id, WarrantyCase.deleted_at.is_(None))
                .order_by(WarrantyCase.id)
            )
            return [case_json(case) for case in rows], head

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
            body = case_json(case)
            for field in sorted(clean):
                _audit(session, case, field, None, clean[field], actor, now)
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
        before_write: Callable[[], Awaitable[None]] | None = None,
        idempotency: Replay | None = None,
    ) -> dict[str, Any]:
        """Validate, run ``before_write`` (the lock checks), then commit.

        The order is the contract's: invalid input (422) is reported before
        lock problems (423/409 ``lock_lost``), which come before a stale
        ``expected`` value (409 ``conflict``).
        """
        async with self.db.read() as session:
            case = await _live_case(session, case_id=case_id)
            ctx = await field_context(session, branch_id=case.branch_id)
        clean = F.validate(changes, ctx)
        F.check_subset("expected", expected, clean)
        if before_write is not None:
            await before_write()
        event: Event | None = None
        async with self.db.write() as session:
            case = await _live_case(session, case_id=case_id, for_update=True)
            await _check_expected(session, case, expected)
            changed = {f: v for f, v in clean.items() if getattr(case, f) != v}
            if changed:
                event = await self._apply(session, case, changed, actor)
            body = case_json(case)
            if idempotency is not None:
                await store_answer(session, idempotency, status_code=200, body=body)
        if event is not None:
            await self.publish(event)
        return body

    async def delete(self, *, case_id: int, actor: Actor) -> None:
        async with self.db.write() as session:
            case = await _live_case(session, case_id=case_id, for_update=True)
            now = utcnow()
            case.deleted_at = now
            case.version += 1
            case.updated_at = now
            case.updated_by = actor.id
            _audit(session, case, "deleted", False, True, actor, now)
            event = await self._append(
                session,
                case.branch_id,
                CASE_DELETED,
                {"case_id": case.id, "by": actor.ref(), "client_id": actor.client_id},
            )
        await self.publish(event)

    async def _apply(
        self, session: AsyncSession, case: WarrantyCase, changed: dict[str, Any], actor: Actor
    ) -> Event:
        now = utcnow()
        case.version += 1
        for field, value in changed.items():
            _audit(session, case, field, getattr(case, field), value, actor, now)
            setattr(case, field, value)
        case.updated_at = now
        case.updated_by = actor.id
        payload = {
            "case_id": case.id,
            "changes": {f: F.to_json(v) for f, v in changed.items()},
            "version": case.version,
            # Beyond the contract's minimum, so clients can show "updated … ago".
            "updated_at": F.to_json(now),
            "by": actor.ref(),
            "client_id": actor.client_id,
        }
        return await self._append(session, case.branch_id, CASE_UPDATED, payload)

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
) -> WarrantyCase:
    query = select(WarrantyCase).where(
        WarrantyCase.id == case_id, WarrantyCase.deleted_at.is_(None)
    )
    if for_update:
        query = query.with_for_update()
    case = await session.scalar(query)
    if case is None:
        raise CaseNotFound("no such case")
    return case


async def field_context(session: AsyncSession, *, branch_id: int) -> F.Context:
    timezone = await session.scalar(select(Branch.timezone).where(Branch.id == branch_id))
    members = await session.scalars(
        select(Membership.user_id).where(Membership.branch_id == branch_id)
    )
    return F.Context(timezone=timezone or "UTC", member_ids=frozenset(members.all()))


async def _check_expected(
    session: AsyncSession, case: WarrantyCase, expected: Mapping[str, Any]
) -> None:
    # Compared in JSON form: the client echoes what the server once sent it.
    current = {f: F.to_json(getattr(case, f)) for f in expected}
    stale = [f for f, value in expected.items() if current[f] != value]
    if not stale:
        return
    by = None
    if case.updated_by is not None:
        name = await session.scalar(select(User.name).where(User.id == case.updated_by))
        by = {"id": case.updated_by, "name": name}
    fields = ", ".join(sorted(stale))
    raise StaleVersion(
        f"{fields}: changed by someone else since you loaded it",
        current={f: current[f] for f in stale},
        by=by,
    )


def _audit(
    session: AsyncSession,
    case: WarrantyCase,
    field: str,
    old: Any,
    new: Any,
    actor: Actor,
    at: dt.datetime,
) -> None:
    session.add(
        AuditEntry(
            case_id=case.id,
            field=field,
            old=dumps_str(F.to_json(old)),
            new=dumps_str(F.to_json(new)),
            user_id=actor.id,
            at=at,
            version=case.version,
        )
    )


def _json_or_none(raw: str | None) -> Any:
    return None if raw is None else loads(raw)
