"""Importing cases from CSV: every row checked first, then written in batches.

All or nothing: every row is validated by the rules of the API's create
(``services/fields.py``) against the branch as it is now, and one bad row
refuses the whole file with a report of each bad row (line, field, rule).
Only a file without a single bad row is written: ``BATCH`` cases per
transaction, each like a create through the API — a case number from the
same counter, version 1, its history (one audit row per field given) and one
``case-created`` event in the outbox, published to open streams after its
batch commits. A batch is one transaction, so a failure of the database
while writing leaves whole batches: the report says how many cases are in
(docs/operations.md, "Importing cases").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert

from ..casefields import EDITABLE
from ..errors import Unavailable, ValidationFailed, WarrantySyncError
from ..jsonutil import dumps_str
from ..storage import outbox
from ..storage.db import Database
from ..storage.models import utcnow
from . import csvio
from . import fields as F
from .cases import AUDIT, CASES, PRUNE_EVERY, Actor, case_json, field_context
from .events import CASE_CREATED, Event

BATCH = 500
# Rows validated between two yields to the event loop: the server goes on
# answering while a large file is checked.
CHECK_SLICE = 1000
DEFAULTS = {spec.name: spec.default for spec in EDITABLE}
# Gets each committed batch's events, in id order.
Publish = Callable[[list[Event]], Awaitable[None]]
Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Report:
    """What an import did (or, with ``dry_run``, would do)."""

    rows: int = 0
    imported: int = 0
    dry_run: bool = False
    case_numbers: list[str] = field(default_factory=list)  # the first and the last
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "dry_run": self.dry_run,
            "case_numbers": self.case_numbers,
        }


class ImportRefused(ValidationFailed):
    """Bad rows: nothing was written. ``errors`` has every one, in file order."""

    def __init__(self, errors: Sequence[csvio.RowError], *, shown: int) -> None:
        first = errors[0]
        lines = len({e.line for e in errors})
        super().__init__(
            f"line {first.line}: {first.message} ({lines} line{'s' if lines != 1 else ''}"
            " with errors; nothing was imported)",
            field=first.field,
            rule=first.rule,
            line=first.line,
            errors=[e.as_json() for e in errors[:shown]],
            error_count=len(errors),
        )
        self.errors = list(errors)


class ImportInterrupted(Unavailable):
    """The database failed while writing; ``imported`` cases (whole batches) are in."""


class CaseImport:
    def __init__(self, db: Database, *, publish: Publish, replay_window: int) -> None:
        self.db = db
        self.publish = publish
        self.replay_window = replay_window

    async def run(
        self,
        *,
        branch_id: int,
        data: bytes,
        actor: Actor | None,
        dry_run: bool = False,
        shown_errors: int = 1000,
        progress: Progress | None = None,
    ) -> Report:
        """Check ``data``, then (unless ``dry_run``) write it; ``ImportRefused`` for bad rows."""
        started = time.perf_counter()
        async with self.db.read() as session:
            ctx = await field_context(session, branch_id=branch_id)
        rows, errors = csvio.read(data)
        clean = await self._check(rows, errors, ctx)
        if errors:
            errors.sort(key=lambda e: e.line)
            raise ImportRefused(errors, shown=shown_errors)
        report = Report(rows=len(clean), dry_run=dry_run)
        if not dry_run:
            for start in range(0, len(clean), BATCH):
                try:
                    numbers = await self._write(branch_id, clean[start : start + BATCH], actor)
                except WarrantySyncError as exc:
                    raise ImportInterrupted(
                        f"{exc.message}: {report.imported} of {len(clean)} cases were imported"
                        f" (lines {_lines(clean, report.imported)}), the rest was not",
                        imported=report.imported,
                        rows=len(clean),
                    ) from exc
                report.imported += len(numbers)
                first = report.case_numbers[0] if report.case_numbers else numbers[0]
                report.case_numbers = [first, numbers[-1]]
                if progress is not None:
                    progress(report.imported, len(clean))
        report.seconds = time.perf_counter() - started
        return report

    async def _check(
        self, rows: list[csvio.Row], errors: list[csvio.RowError], ctx: F.Context
    ) -> list[tuple[int, dict[str, Any]]]:
        """Each row's stored values, by the API's rules; bad ones go to ``errors``."""
        clean: list[tuple[int, dict[str, Any]]] = []
        for n, row in enumerate(rows):
            if n and n % CHECK_SLICE == 0:
                await asyncio.sleep(0)
            values = csvio.values_of(row)
            good: dict[str, Any] = {}
            bad = False
            for name, value in values.items():
                try:
                    good.update(F.validate({name: value}, ctx))
                except ValidationFailed as exc:
                    bad = True
                    errors.append(
                        csvio.RowError(row.line, name, str(exc.extra.get("rule")), exc.message)
                    )
            if "customer_name" not in values:
                bad = True
                message = "customer_name: must not be empty"
                errors.append(csvio.RowError(row.line, "customer_name", "required", message))
            if not bad:
                clean.append((row.line, good))
        return clean

    async def _write(
        self, branch_id: int, batch: Sequence[tuple[int, dict[str, Any]]], actor: Actor | None
    ) -> list[str]:
        """One transaction: the batch's cases, their history and their events."""
        user_id = None if actor is None else actor.id
        by = None if actor is None else actor.ref()
        client_id = None if actor is None else actor.client_id
        async with self.db.write(bulk=True) as session:
            last = await outbox.next_counters(session, name="case_number", count=len(batch))
            numbers = [f"WC-{n:06d}" for n in range(last - len(batch) + 1, last + 1)]
            now = utcnow()
            rows = [
                {
                    **DEFAULTS,
                    **values,
                    "branch_id": branch_id,
                    "case_number": number,
                    "version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "updated_by": user_id,
                    "deleted_at": None,
                }
                for number, (_line, values) in zip(numbers, batch, strict=True)
            ]
            inserted = await session.execute(
                insert(CASES).returning(CASES.c.id, sort_by_parameter_order=True), rows
            )
            for row, case_id in zip(rows, inserted.scalars().all(), strict=True):
                row["id"] = case_id
            await session.execute(
                insert(AUDIT),
                [
                    {
                        "case_id": row["id"],
                        "field": name,
                        "old": "null",
                        "new": dumps_str(F.to_json(row[name])),
                        "user_id": user_id,
                        "at": now,
                        "version": 1,
                    }
                    for row, (_line, values) in zip(rows, batch, strict=True)
                    for name in sorted(values)
                ],
            )
            datas = [
                dumps_str({"case": case_json(row), "by": by, "client_id": client_id})
                for row in rows
            ]
            ids = await outbox.append_events(
                session, branch_id=branch_id, kind=CASE_CREATED, datas=datas
            )
            if ids[-1] // PRUNE_EVERY != (ids[0] - 1) // PRUNE_EVERY:
                await outbox.prune(session, branch_id=branch_id, keep=self.replay_window)
        await self.publish(
            [
                Event(branch_id, CASE_CREATED, data.encode(), event_id)
                for event_id, data in zip(ids, datas, strict=True)
            ]
        )
        return numbers


def _lines(clean: Sequence[tuple[int, dict[str, Any]]], count: int) -> str:
    if not count:
        return "none"
    return f"{clean[0][0]}–{clean[count - 1][0]}"


def one_by_one(publish: Callable[[Event], Awaitable[None]]) -> Publish:
    """A batch publisher from a one-event one (the broker's)."""

    async def each(events: list[Event]) -> None:
        for event in events:
            await publish(event)

    return each


async def no_one(_events: list[Event]) -> None:
    """For imports with nobody to tell: servers find the events in the outbox."""


__all__ = [
    "BATCH",
    "CaseImport",
    "ImportInterrupted",
    "ImportRefused",
    "Report",
    "no_one",
    "one_by_one",
]
