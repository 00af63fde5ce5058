"""Restore a value from a case's history (docs/protocol.md, "Second chances").

A thin layer over the normal change path: the entry's value becomes the
``changes`` of an ordinary ``CaseService.patch``, with the caller's
``expected`` — so the same rules (validated as they are today), locks,
conflict check, version, audit rows and ``case-updated`` event apply, and
whatever makes a PATCH faster makes this faster too. Its audit row carries
``restored_from``, the id of the entry it brought back.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import select

from ..errors import NotFound, ValidationFailed
from ..jsonutil import loads
from ..storage.models import AuditEntry
from . import fields as F
from .cases import Actor, CaseService
from .idempotency import IdempotencyGuard

# "expected" left out of the request: last-write-wins, as a PATCH without it.
NOT_SENT: Any = object()


async def restore_value(
    cases: CaseService,
    *,
    case_id: int,
    entry_id: int,
    expected: Any,
    side: Literal["new", "old"] = "new",
    actor: Actor,
    branch_id: int,
    idempotency: IdempotencyGuard | None = None,
) -> dict[str, Any]:
    """Set the field of history entry ``entry_id`` back to a value of that entry.

    ``side`` "new": the value the entry saved; "old": the one it replaced
    (the only way back to a value the case was created with by default,
    which has no entry of its own). ``NotFound`` when the entry is not one
    of the case's; ``ValidationFailed`` when it records no field value a
    change may set (rule ``read_only``, such as a deletion) or has no value
    before it (rule ``no_earlier_value``: it created the case); then
    everything a PATCH answers. ``expected`` is the value the caller
    believes the field has now, or ``NOT_SENT``.
    """
    async with cases.db.read() as session:
        entry = (
            await session.execute(
                select(AuditEntry.field, AuditEntry.old, AuditEntry.new, AuditEntry.version).where(
                    AuditEntry.id == entry_id, AuditEntry.case_id == case_id
                )
            )
        ).first()
    if entry is None:
        raise NotFound("no such history entry of this case")
    field, old, new, version = entry
    if field not in F.RULES:
        raise ValidationFailed(
            f"{field}: this entry holds no value a restore may set"
            " (a deleted case comes back from the trash)",
            field=field,
            rule="read_only",
        )
    if side == "old" and version == 1:
        raise ValidationFailed(
            "side: this entry created the case; there is no value before it",
            field="side",
            rule="no_earlier_value",
        )
    raw = new if side == "new" else old
    value = None if raw is None else loads(raw)
    return await cases.patch(
        case_id=case_id,
        changes={field: value},
        expected={} if expected is NOT_SENT else {field: expected},
        actor=actor,
        branch_id=branch_id,
        idempotency=idempotency,
        restored_from=entry_id,
    )
