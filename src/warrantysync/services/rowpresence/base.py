"""The row presence backend contract: one spot per (branch, user, tab client id).

Each method is one atomic step. A spot whose ``expires_at <= now`` is gone:
``spots`` neither returns it nor keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Spot:
    """Where one tab is: its case, the field it edits (or None), editing, idle."""

    user_id: int
    name: str
    client_id: str
    case_id: int
    field: str | None
    editing: bool
    idle: bool

    def to_record(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "name": self.name,
            "client_id": self.client_id,
            "case_id": self.case_id,
            "field": self.field,
            "editing": self.editing,
            "idle": self.idle,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Spot:
        return cls(
            user_id=int(record["user_id"]),
            name=str(record["name"]),
            client_id=str(record["client_id"]),
            case_id=int(record["case_id"]),
            field=None if record.get("field") is None else str(record["field"]),
            editing=bool(record["editing"]),
            idle=bool(record["idle"]),
        )


class RowPresenceBackend(Protocol):
    async def put(self, *, branch_id: int, spot: Spot, expires_at: float) -> bool:
        """Store the tab's spot until ``expires_at``; True when what others see changed."""
        ...

    async def remove(self, *, branch_id: int, user_id: int, client_id: str) -> bool:
        """Drop the tab's spot; True if it had one."""
        ...

    async def spots(self, *, branch_id: int, now: float) -> list[Spot]:
        """The branch's live spots (expired ones are dropped on the way)."""
        ...

    async def close(self) -> None: ...
