"""The presence backend contract: open streams counted per branch, user and client.

Each method is one atomic step (a dict update here, one Lua script in
Redis); counts never go below zero. A client is present on a branch while
at least one of its streams there is open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Viewer:
    """A user present on a branch with ``clients`` distinct tabs."""

    user_id: int
    name: str
    clients: int

    def public(self) -> dict[str, Any]:
        return {"user": {"id": self.user_id, "name": self.name}, "clients": self.clients}


@dataclass(frozen=True, slots=True)
class Lapsed:
    """A client's streams counted closed because their node stopped renewing its lease.

    ``remaining`` is what the client still has open on the branch elsewhere.
    """

    branch_id: int
    user_id: int
    client_id: str
    remaining: int


@dataclass(frozen=True, slots=True)
class Upkeep:
    """What one ``PresenceBackend.maintain()`` found: lapsed streams, branches to re-announce."""

    lapsed: tuple[Lapsed, ...] = ()
    changed_branches: frozenset[int] = frozenset()


class PresenceBackend(Protocol):
    async def join(
        self,
        *,
        branch_id: int,
        user_id: int,
        name: str,
        client_id: str,
        max_user_streams: int | None = None,
    ) -> int | None:
        """Count one more stream and return the client's stream count on the branch.

        With ``max_user_streams``, a user who already has that many streams
        open (all branches) is refused: nothing is counted and None comes back.
        """
        ...

    async def leave(self, *, branch_id: int, user_id: int, client_id: str) -> int:
        """Count one stream fewer; returns what is left for the client on the branch."""
        ...

    async def client_streams(self, *, branch_id: int, user_id: int, client_id: str) -> int:
        """Open streams of one client on one branch."""
        ...

    async def viewers(self, *, branch_id: int) -> list[Viewer]: ...

    async def streams_of_user(self, *, user_id: int) -> int:
        """Open streams of the user on every branch."""
        ...

    maintain_every: float
    """Seconds between ``maintain()`` calls."""

    reachable: bool
    """False while the backend knows its store is away (reads would fail)."""

    async def probe(self) -> bool:
        """Check at once whether the store answers again (``reachable`` follows)."""
        ...

    async def maintain(self) -> Upkeep:
        """Periodic upkeep in a cluster: renew this node's lease, repair its counts,
        and take over the streams of nodes whose lease lapsed (each exactly once)."""
        ...

    async def close(self) -> None: ...
