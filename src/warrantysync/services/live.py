"""The live state of a branch: its locks, who is here and where, or that nobody can tell.

With Redis configured both live there, so while Redis is away they are
unknown, while the cases (in the database) can still be read and saved:
saves carrying ``expected`` are checked by the database itself. Snapshot,
``ready`` and ``state`` then carry ``live_state: "unavailable"`` with empty
``locks``, ``presence`` and ``row_presence`` instead of failing (docs/protocol.md, "Redis
unreachable").
"""

from __future__ import annotations

from typing import Any

from ..errors import Unavailable
from .locks import LockManager, locks_seen_by
from .presence import Presence
from .rowpresence import RowPresence

__all__ = ["AVAILABLE", "UNAVAILABLE", "live_state", "unavailable_state"]

AVAILABLE = "ok"
UNAVAILABLE = "unavailable"


def unavailable_state() -> dict[str, Any]:
    return {"locks": [], "presence": [], "row_presence": [], "live_state": UNAVAILABLE}


async def live_state(
    *,
    locks: LockManager,
    presence: Presence,
    branch_id: int,
    seen_by: int | None = None,
    rows: RowPresence | None = None,
) -> dict[str, Any]:
    """``{locks, presence, row_presence, live_state}``; never raises for Redis trouble.

    ``rows`` None: ``row_presence`` is left out (callers that do not track it).

    ``seen_by``: the user the answer is for, who sees only their own locks'
    client ids (``locks_seen_by``); None for the shared copy of a ``state``.
    """
    if not presence.reachable:
        return unavailable_state()  # known already: no request waits on Redis
    try:
        # Presence first: its failure marks Redis unreachable for the requests after this.
        viewers = await presence.viewers(branch_id=branch_id)
        held = await locks.snapshot(branch_id=branch_id)
        spots = None if rows is None else await rows.rows(branch_id=branch_id)
    except Unavailable:
        return unavailable_state()
    if seen_by is not None:
        held = locks_seen_by(held, seen_by)
    state: dict[str, Any] = {"locks": held, "presence": viewers, "live_state": AVAILABLE}
    if spots is not None:
        state["row_presence"] = spots
    return state
