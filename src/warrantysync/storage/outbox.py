"""The durable event log (docs/protocol.md, "The event stream") and the counters that number it.

``append_event`` must run inside the write transaction of the change it
describes: the branch counter row is bumped there, so ids are contiguous and
appear in commit order (the row lock serialises writers of one branch).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from sqlalchemy import TextClause, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from .models import Branch, Counter, OutboxEvent, table

_INSERT_EVENT = insert(table(OutboxEvent))


@functools.cache
def _sql(statement: str) -> TextClause:
    """One ``text()`` per statement: each save runs the same few."""
    return text(statement)


async def _bump(
    session: AsyncSession, *, table: str, key_col: str, key: object, col: str, by: int = 1
) -> int:
    """Add ``by`` to ``table.col`` where ``key_col = key`` and return the new value.

    One statement per dialect so the read can never see another writer's
    uncommitted increment: ``RETURNING`` on SQLite and PostgreSQL, the
    ``LAST_INSERT_ID(expr)`` idiom on MySQL/MariaDB (per-connection, safe).
    """
    dialect = session.get_bind().dialect.name
    if dialect in ("mysql", "mariadb"):
        await session.execute(
            _sql(f"UPDATE {table} SET {col} = LAST_INSERT_ID({col} + :by) WHERE {key_col} = :k"),
            {"k": key, "by": by},
        )
        value = (await session.execute(_sql("SELECT LAST_INSERT_ID()"))).scalar_one()
        return int(value)
    value = (
        await session.execute(
            _sql(f"UPDATE {table} SET {col} = {col} + :by WHERE {key_col} = :k RETURNING {col}"),
            {"k": key, "by": by},
        )
    ).scalar_one()
    return int(value)


async def next_event_id(session: AsyncSession, *, branch_id: int) -> int:
    return await _bump(session, table="branches", key_col="id", key=branch_id, col="last_event_id")


async def next_counter(session: AsyncSession, *, name: str) -> int:
    return await next_counters(session, name=name, count=1)


async def next_counters(session: AsyncSession, *, name: str, count: int) -> int:
    """Take the next ``count`` values of a counter at once; returns the last of them."""
    exists = await session.scalar(select(Counter.name).where(Counter.name == name))
    if exists is None:
        session.add(Counter(name=name, value=0))
        await session.flush()
    return await _bump(session, table="counters", key_col="name", key=name, col="value", by=count)


async def append_event(session: AsyncSession, *, branch_id: int, kind: str, data: str) -> int:
    event_id = await next_event_id(session, branch_id=branch_id)
    await session.execute(
        _INSERT_EVENT, {"branch_id": branch_id, "id": event_id, "kind": kind, "data": data}
    )
    return event_id


async def append_events(
    session: AsyncSession, *, branch_id: int, kind: str, datas: Sequence[str]
) -> list[int]:
    """``append_event`` for many events of one kind: one counter bump, one insert."""
    last = await _bump(
        session, table="branches", key_col="id", key=branch_id, col="last_event_id", by=len(datas)
    )
    ids = list(range(last - len(datas) + 1, last + 1))
    await session.execute(
        insert(table(OutboxEvent)),
        [
            {"branch_id": branch_id, "id": event_id, "kind": kind, "data": data}
            for event_id, data in zip(ids, datas, strict=True)
        ],
    )
    return ids


async def head(session: AsyncSession, *, branch_id: int) -> int:
    value = await session.scalar(select(Branch.last_event_id).where(Branch.id == branch_id))
    return int(value or 0)


async def events_after(
    session: AsyncSession, *, branch_id: int, after: int, limit: int
) -> Sequence[OutboxEvent]:
    result = await session.scalars(
        select(OutboxEvent)
        .where(OutboxEvent.branch_id == branch_id, OutboxEvent.id > after)
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return result.all()


async def oldest_id(session: AsyncSession, *, branch_id: int) -> int | None:
    value = await session.scalar(
        select(func.min(OutboxEvent.id)).where(OutboxEvent.branch_id == branch_id)
    )
    return None if value is None else int(value)


async def prune(session: AsyncSession, *, branch_id: int, keep: int) -> int:
    """Drop events older than the newest ``keep``; returns rows removed."""
    newest = await head(session, branch_id=branch_id)
    result = await session.execute(
        delete(OutboxEvent).where(
            OutboxEvent.branch_id == branch_id, OutboxEvent.id <= newest - keep
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def drop_before(session: AsyncSession, *, branch_id: int, created_before: dt.datetime) -> int:
    """Drop the branch's events written before ``created_before``; returns rows removed.

    Only ever the front of the log: ids stay contiguous from the oldest kept
    event, and a resume from before it gets ``sync-required`` as after any
    prune. The delete is a primary-key range, so it never locks the end of
    the log where writers append.
    """
    last_old = await session.scalar(
        select(func.max(OutboxEvent.id)).where(
            OutboxEvent.branch_id == branch_id, OutboxEvent.created_at < created_before
        )
    )
    if last_old is None:
        return 0
    result = await session.execute(
        delete(OutboxEvent).where(OutboxEvent.branch_id == branch_id, OutboxEvent.id <= last_old)
    )
    return int(getattr(result, "rowcount", 0) or 0)
