"""The lock request backend contract: pending "please release this field" requests.

A field has at most one pending request at a time. Every method is one
atomic step (a dict update here, one Lua script in Redis); ``take`` hands a
request out exactly once across processes, so exactly one node answers it
or lets it time out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..locks.base import Owner, iso_utc


@dataclass(frozen=True, slots=True)
class LockRequest:
    """``asker`` asks ``holder`` (the lock's owner when asked) for ``(case_id, field)``."""

    id: str
    case_id: int
    branch_id: int
    field: str
    asker: Owner
    holder: Owner
    asked_at: float
    due_at: float  # from then on an idle holder's lock passes to the asker

    def public(self) -> dict[str, Any]:
        """Request JSON with the holder's client id; ``seen_by`` for everyone else."""
        return {
            "id": self.id,
            "case_id": self.case_id,
            "field": self.field,
            "asker": {"id": self.asker.user_id, "name": self.asker.name},
            "holder": {"id": self.holder.user_id, "name": self.holder.name},
            "client_id": self.holder.client_id,
            "asked_at": iso_utc(self.asked_at),
            "due_at": iso_utc(self.due_at),
        }

    def seen_by(self, viewer: int | None) -> dict[str, Any]:
        public = self.public()
        if viewer != self.holder.user_id:
            public["client_id"] = None
        return public

    def to_record(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "case_id": self.case_id,
            "branch_id": self.branch_id,
            "field": self.field,
            "asker": [self.asker.user_id, self.asker.name, self.asker.client_id],
            "holder": [self.holder.user_id, self.holder.name, self.holder.client_id],
            "asked_at": self.asked_at,
            "due_at": self.due_at,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> LockRequest:
        return cls(
            id=str(record["id"]),
            case_id=int(record["case_id"]),
            branch_id=int(record["branch_id"]),
            field=str(record["field"]),
            asker=Owner(*record["asker"]),
            holder=Owner(*record["holder"]),
            asked_at=float(record["asked_at"]),
            due_at=float(record["due_at"]),
        )


class LockRequestBackend(Protocol):
    async def add(self, request: LockRequest) -> LockRequest:
        """Store ``request`` unless the field already has one; returns the one now pending."""
        ...

    async def get(self, request_id: str) -> LockRequest | None: ...

    async def take(self, request_id: str) -> LockRequest | None:
        """Remove and return the request; each request is taken by exactly one call."""
        ...

    async def pending(self) -> list[LockRequest]:
        """Every pending request (they are few: one per asked field, for seconds)."""
        ...

    async def close(self) -> None: ...
