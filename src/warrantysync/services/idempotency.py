"""Idempotency keys: a retried request gets the first answer again.

A 2xx answer is stored in the transaction of the change it reports, so
"committed" and "remembered" are one fact; a 4xx answer (other than 429) is
stored afterwards in its own small transaction. Keys live 24 hours.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import IdempotencyKeyReused, ValidationFailed
from ..jsonutil import dumps_str, loads
from ..storage.db import Database
from ..storage.models import IdempotencyRecord, table, utcnow

KEY_LIFETIME = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Replay:
    """The identity of one idempotent request."""

    user_id: int
    key: str
    request_hash: str


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status_code: int
    body: Any


def request_hash(method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def make_replay(user_id: int, key: str, *, method: str, path: str, body: bytes) -> Replay:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key: must be 1..{MAX_KEY_LENGTH} printable characters",
            field="Idempotency-Key",
            rule="idempotency_key",
        )
    return Replay(user_id, key, request_hash(method, path, body))


async def lookup(db: Database, replay: Replay) -> StoredAnswer | None:
    """The stored answer for this key, or None; a different body is refused."""
    async with db.read() as session:
        record = await session.scalar(
            select(IdempotencyRecord).where(
                IdempotencyRecord.user_id == replay.user_id,
                IdempotencyRecord.key == replay.key,
                IdempotencyRecord.created_at > utcnow() - KEY_LIFETIME,
            )
        )
    if record is None:
        return None
    if record.request_hash != replay.request_hash:
        raise IdempotencyKeyReused("this Idempotency-Key was already used for a different request")
    return StoredAnswer(record.status_code, loads(record.body))


async def store_answer(
    session: AsyncSession, replay: Replay, *, status_code: int, body: Any
) -> None:
    # An expired record with the same key may linger until the sweep. A live
    # one is never replaced: a concurrent twin that committed first makes our
    # insert fail, rolling back our whole change (the caller answers with theirs).
    await session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.user_id == replay.user_id,
            IdempotencyRecord.key == replay.key,
            IdempotencyRecord.created_at <= utcnow() - KEY_LIFETIME,
        )
    )
    await session.execute(
        insert(table(IdempotencyRecord)).values(
            user_id=replay.user_id,
            key=replay.key,
            request_hash=replay.request_hash,
            status_code=status_code,
            body=dumps_str(body),
        )
    )


async def remember_refusal(db: Database, replay: Replay, *, status_code: int, body: Any) -> None:
    """Store a 4xx answer. A concurrent first answer wins; ours is dropped."""
    try:
        async with db.write() as session:
            await store_answer(session, replay, status_code=status_code, body=body)
    except IntegrityError:
        pass


async def sweep(db: Database) -> int:
    async with db.write() as session:
        result = await session.execute(
            delete(IdempotencyRecord).where(IdempotencyRecord.created_at <= utcnow() - KEY_LIFETIME)
        )
    return int(getattr(result, "rowcount", 0) or 0)
