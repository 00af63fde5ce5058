"""The trash: deleted cases, kept for ``TRASH_RETENTION_DAYS``, then purged.

``DELETE /api/cases/{id}`` only marks a case deleted (``deleted_at``); its
row, number and history stay. Managers list a branch's deleted cases here
and bring one back with ``CaseService.undelete`` (docs/protocol.md,
"Trash"). Once a case has been in the trash longer than the retention, the
purge removes it for good: its row and its audit rows, and with them every
event of the log older than the retention (the events name the case and its
values), always from the front of each branch's log so ids stay contiguous.

Only one node purges: each round, every node asks for the ``trash-purge``
lease (storage/leases.py) for one ``TRASH_PURGE_INTERVAL``; the database
gives it to one of them, and the others skip the round. The purge itself
is idempotent besides — rows are locked, re-checked and deleted in one
transaction, and each node reports only what its own deletes removed — so
even a node that outlived its lease cannot purge or count a case twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import secrets
import socket
from typing import Any, Protocol

from sqlalchemy import delete, func, select

from ..errors import Unavailable
from ..storage import leases, outbox
from ..storage.db import Database
from ..storage.models import AuditEntry, Branch, User, WarrantyCase, table, utcnow
from . import fields as F
from .cases import case_json
from .metrics import Metrics

log = logging.getLogger(__name__)

LEASE = "trash-purge"
PURGE_BATCH = 200  # cases per transaction: a big purge never holds locks for long
FIRST_ROUND_AFTER = 60.0  # seconds after start, so frequent deploys cannot starve it
CASES = table(WarrantyCase)
AUDIT = table(AuditEntry)


class _Stop(Protocol):
    def is_set(self) -> bool: ...

    async def wait(self) -> Any: ...


def node_name() -> str:
    """Who holds a lease: unique per process, readable in the ``leases`` table."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Trash:
    def __init__(
        self,
        db: Database,
        *,
        retention_days: float,
        purge_interval: float,
        metrics: Metrics | None = None,
        holder: str | None = None,
    ) -> None:
        self.db = db
        self.retention = dt.timedelta(days=retention_days)
        self.purge_interval = purge_interval
        self.metrics = metrics
        self.holder = holder or node_name()

    async def list(self, *, branch_id: int, limit: int) -> dict[str, Any]:
        """The branch's deleted cases, the latest deleted first, with who and when."""
        deleted = (CASES.c.branch_id == branch_id, CASES.c.deleted_at.is_not(None))
        async with self.db.read() as session:
            total = await session.scalar(select(func.count()).select_from(CASES).where(*deleted))
            rows = (
                await session.execute(
                    select(CASES, User.name.label("deleted_by_name"))
                    .outerjoin(User, User.id == CASES.c.updated_by)
                    .where(*deleted)
                    .order_by(CASES.c.deleted_at.desc(), CASES.c.id.desc())
                    .limit(limit)
                )
            ).all()
        cases = []
        for row in rows:
            values = row._mapping
            # Nothing changes a deleted case, so its last writer is who deleted it.
            by = values["updated_by"]
            deleted_by = None if by is None else {"id": by, "name": values["deleted_by_name"]}
            cases.append(
                {
                    **case_json(values),
                    "deleted_at": F.to_json(values["deleted_at"]),
                    "deleted_by": deleted_by,
                    "purge_at": F.to_json(values["deleted_at"] + self.retention),
                }
            )
        return {"cases": cases, "total": int(total or 0), "retention_days": self.retention_days}

    @property
    def retention_days(self) -> float:
        return self.retention / dt.timedelta(days=1)

    async def purge(self, *, now: dt.datetime | None = None) -> int:
        """Remove the cases deleted more than the retention ago; returns how many this call did."""
        cutoff = (now or utcnow()) - self.retention
        purged = 0
        while True:
            async with self.db.write(bulk=True) as session:
                ids = list(
                    (
                        await session.scalars(
                            select(CASES.c.id)
                            .where(CASES.c.deleted_at.is_not(None), CASES.c.deleted_at < cutoff)
                            .order_by(CASES.c.id)
                            .limit(PURGE_BATCH)
                            .with_for_update()
                        )
                    ).all()
                )
                if ids:
                    await session.execute(delete(AUDIT).where(AUDIT.c.case_id.in_(ids)))
                    # Re-checked under the row locks: a case restored meanwhile stays.
                    gone = await session.execute(
                        delete(CASES).where(
                            CASES.c.id.in_(ids),
                            CASES.c.deleted_at.is_not(None),
                            CASES.c.deleted_at < cutoff,
                        )
                    )
                    purged += int(getattr(gone, "rowcount", 0) or 0)
            if len(ids) < PURGE_BATCH:
                break
        async with self.db.write() as session:
            for branch_id in (await session.scalars(select(Branch.id))).all():
                await outbox.drop_before(session, branch_id=branch_id, created_before=cutoff)
        if purged:
            log.info("purged %d case(s) deleted before %s", purged, cutoff.isoformat())
            if self.metrics is not None:
                self.metrics.cases_purged.inc(purged)
        return purged

    async def purge_if_leader(self) -> int | None:
        """One round: purge if this node gets the lease; None when another node has it."""
        now = utcnow()
        until = now + dt.timedelta(seconds=self.purge_interval)
        if not await leases.claim(self.db, name=LEASE, holder=self.holder, until=until, now=now):
            self._count("skipped")
            return None
        self._count("ran")
        return await self.purge(now=now)

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.trash_purges.labels(outcome=outcome).inc()

    async def run(self, stop: _Stop) -> None:
        """A round soon after start, then every ``purge_interval`` s, until ``stop``."""
        delay = min(self.purge_interval, FIRST_ROUND_AFTER)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
                    return
            delay = self.purge_interval
            try:
                await self.purge_if_leader()
            except Unavailable as exc:
                log.warning("trash purge skipped, database unavailable: %s", exc.message)
            except Exception:
                log.exception("trash purge failed")
