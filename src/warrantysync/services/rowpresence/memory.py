"""Row presence in one process: a dict per branch, no awaits inside a method."""

from __future__ import annotations

from .base import Spot

_Key = tuple[int, str]  # user, client id


class MemoryRowPresenceBackend:
    def __init__(self) -> None:
        self._branches: dict[int, dict[_Key, tuple[Spot, float]]] = {}

    async def put(self, *, branch_id: int, spot: Spot, expires_at: float) -> bool:
        spots = self._branches.setdefault(branch_id, {})
        key = (spot.user_id, spot.client_id)
        before = spots.get(key)
        spots[key] = (spot, expires_at)
        return before is None or before[0] != spot

    async def remove(self, *, branch_id: int, user_id: int, client_id: str) -> bool:
        spots = self._branches.get(branch_id)
        if spots is None or spots.pop((user_id, client_id), None) is None:
            return False
        if not spots:
            del self._branches[branch_id]
        return True

    async def spots(self, *, branch_id: int, now: float) -> list[Spot]:
        spots = self._branches.get(branch_id, {})
        for key in [key for key, (_, until) in spots.items() if until <= now]:
            del spots[key]
        return [spot for spot, _ in spots.values()]

    async def close(self) -> None:
        self._branches.clear()
