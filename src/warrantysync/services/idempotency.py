"""Idempotency keys: a retried request gets the first answer again.

One ``IdempotencyGuard`` per request carries everything about its key
(docs/protocol.md, PATCH): whether an identical request was answered before,
storing this request's answer, and the race between two identical retries
sent at once.

* A 2xx answer is stored in the write transaction of the change it reports
  (``keep``), so "committed" and "remembered" are one fact.
* A refusal (4xx other than 429) is stored afterwards in its own small
  transaction (``refused``): the same request would be refused again, and
  must not be applied later either. A 429 or 5xx is not an answer to the
  request, only to that moment, so the retry runs again.
* Records are unique per (user, key). Of two identical requests racing, the
  first to commit wins; the other one's insert fails, and with it its whole
  change, and it answers with the winner's answer (``twin``, or ``refused``
  returning it).

Keys live 24 hours; ``sweep`` deletes older records, at most about
``SWEEP_BATCH`` per transaction: at a chain's rate a day's keys are
millions, and one statement deleting them all would hold the database's
write lock, and every save behind it, for as long as it takes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..errors import IdempotencyKeyReused, ValidationFailed
from ..jsonutil import dumps_str, loads
from ..storage.db import Database
from ..storage.models import IdempotencyRecord, table, utcnow

KEY_LIFETIME = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 128
SWEEP_BATCH = 2000  # expired records deleted per transaction
RECORDS = table(IdempotencyRecord)
# Core statements built once (docs/performance.md, "Third round: CPU per
# save"): the ORM's entity loading and its bulk delete, which evaluates the
# condition against the session's objects, cost a save more than the SQL.
_THIS_KEY = (RECORDS.c.user_id == bindparam("b_user_id")) & (RECORDS.c.key == bindparam("b_key"))
_FIND = select(RECORDS.c.request_hash, RECORDS.c.status_code, RECORDS.c.body).where(
    _THIS_KEY, RECORDS.c.created_at > bindparam("b_since")
)
_DROP_EXPIRED = delete(RECORDS).where(_THIS_KEY, RECORDS.c.created_at <= bindparam("b_since"))
_INSERT = insert(RECORDS)
# The sweep's batch ends at the b_offset+1-th oldest expired record's time.
_BATCH_END = (
    select(RECORDS.c.created_at)
    .where(RECORDS.c.created_at <= bindparam("b_cutoff"))
    .order_by(RECORDS.c.created_at)
    .limit(1)
    .offset(bindparam("b_offset"))
)
_DROP_UP_TO = delete(RECORDS).where(RECORDS.c.created_at <= bindparam("b_upto"))


@dataclass(frozen=True, slots=True)
class Answer:
    """An answer as stored for a key: its status and its JSON body."""

    status_code: int
    body: Any

    @property
    def remembered(self) -> bool:
        """Whether a retry gets this answer again rather than running again."""
        return 200 <= self.status_code < 300 or (
            400 <= self.status_code < 500 and self.status_code != 429
        )


def request_hash(method: str, path: str, body: bytes) -> str:
    """What makes two requests under one key the same request: method, path and raw body."""
    digest = hashlib.sha256()
    for part in (method.encode(), path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyGuard:
    """The ``Idempotency-Key`` of one request, from its first lookup to its stored answer.

    A request without a key gets a guard too, one that never replays and
    stores nothing, so callers need no second path.
    """

    def __init__(
        self,
        db: Database,
        *,
        user_id: int,
        key: str | None,
        method: str,
        path: str,
        body: bytes,
    ) -> None:
        """A key that is not 1..128 printable characters raises ``ValidationFailed``."""
        if key is not None and (not key or len(key) > MAX_KEY_LENGTH or not key.isprintable()):
            raise ValidationFailed(
                f"Idempotency-Key: must be 1..{MAX_KEY_LENGTH} printable characters",
                field="Idempotency-Key",
                rule="idempotency_key",
            )
        self.db = db
        self.user_id = user_id
        self.key = key
        self.request_hash = "" if key is None else request_hash(method, path, body)

    async def earlier(self) -> Answer | None:
        """The answer an identical request got before, to send again; None: go on.

        The key answered a different request (another body, path or method):
        ``IdempotencyKeyReused``.
        """
        if self.key is None:
            return None
        async with self.db.read() as session:
            record = (await session.execute(_FIND, self._key_params())).first()
        if record is None:
            return None
        if record.request_hash != self.request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used for a different request"
            )
        return Answer(record.status_code, loads(record.body))

    async def stored(self, session: AsyncSession) -> bool:
        """Whether an answer is stored under the key, read in the caller's transaction.

        For a caller that asks here instead of ``earlier`` and, when one is,
        starts over through ``earlier`` (web/routes/cases.py).
        """
        if self.key is None:
            return False
        return (await session.execute(_FIND, self._key_params())).first() is not None

    def _key_params(self) -> dict[str, object]:
        return {"b_user_id": self.user_id, "b_key": self.key, "b_since": utcnow() - KEY_LIFETIME}

    async def keep(self, session: AsyncSession, answer: Answer) -> None:
        """Store ``answer`` in the caller's write transaction, with the change it reports.

        If an identical twin committed first, this insert fails with
        ``IntegrityError`` and rolls the whole transaction back; ``twin``
        then finds the answer to send.
        """
        if self.key is None or not answer.remembered:
            return
        # An expired record with the same key may linger until the sweep; a
        # live one is never replaced.
        await session.execute(_DROP_EXPIRED, self._key_params())
        await session.execute(
            _INSERT,
            {
                "user_id": self.user_id,
                "key": self.key,
                "request_hash": self.request_hash,
                "status_code": answer.status_code,
                "body": dumps_str(answer.body),
            },
        )

    async def refused(self, answer: Answer) -> Answer | None:
        """Store a refusal as the key's answer; returns a twin's answer to send instead.

        None: answer the refusal itself (stored, or not one a retry gets
        again, such as 429 or 503). An identical twin that stored its answer
        first wins: that answer is returned, and a retry gets it too.
        """
        if self.key is None or not answer.remembered:
            return None
        try:
            async with self.db.write() as session:
                await self.keep(session, answer)
        except IntegrityError:
            return await self.twin()
        return None

    async def twin(self) -> Answer | None:
        """After a write failed on a unique index: the answer of the twin that got there first.

        None when no answer is stored under the key, so the failure was not
        a twin's doing (the caller re-raises it).
        """
        return await self.earlier()


async def sweep(db: Database, *, now: dt.datetime | None = None, batch: int = SWEEP_BATCH) -> int:
    """Delete the records older than ``KEY_LIFETIME``; returns how many.

    Oldest first, one batch per transaction: each deletes up to the
    ``batch``-th oldest expired record's time (ties go with it), so
    the writers waiting meanwhile get their turn between two batches.
    """
    cutoff = (now or utcnow()) - KEY_LIFETIME
    swept = 0
    while True:
        async with db.write(bulk=True) as session:
            boundary = await session.scalar(_BATCH_END, {"b_cutoff": cutoff, "b_offset": batch - 1})
            result = await session.execute(
                _DROP_UP_TO, {"b_upto": cutoff if boundary is None else boundary}
            )
        swept += int(getattr(result, "rowcount", 0) or 0)
        if boundary is None:
            return swept
