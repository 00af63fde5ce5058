"""In-process presence: plain dicts, atomic because no method awaits."""

from __future__ import annotations

from .base import Upkeep, Viewer

_Key = tuple[int, int, str]


class MemoryPresenceBackend:
    # One process: no lease to renew, no other node to outlive.
    maintain_every = 60.0
    reachable = True

    def __init__(self) -> None:
        self._streams: dict[_Key, int] = {}
        # branch -> user -> client ids with at least one open stream
        self._clients: dict[int, dict[int, set[str]]] = {}
        self._user_streams: dict[int, int] = {}
        self._names: dict[int, str] = {}

    async def join(
        self,
        *,
        branch_id: int,
        user_id: int,
        name: str,
        client_id: str,
        max_user_streams: int | None = None,
    ) -> int | None:
        open_streams = self._user_streams.get(user_id, 0)
        if max_user_streams is not None and open_streams >= max_user_streams:
            return None
        key = (branch_id, user_id, client_id)
        count = self._streams.get(key, 0) + 1
        self._streams[key] = count
        self._clients.setdefault(branch_id, {}).setdefault(user_id, set()).add(client_id)
        self._user_streams[user_id] = open_streams + 1
        self._names[user_id] = name
        return count

    async def leave(self, *, branch_id: int, user_id: int, client_id: str) -> int:
        key = (branch_id, user_id, client_id)
        count = self._streams.get(key, 0)
        if count == 0:
            return 0
        count -= 1
        remaining = self._user_streams[user_id] - 1
        if remaining:
            self._user_streams[user_id] = remaining
        else:
            del self._user_streams[user_id]
            del self._names[user_id]
        if count:
            self._streams[key] = count
            return count
        del self._streams[key]
        users = self._clients[branch_id]
        users[user_id].discard(client_id)
        if not users[user_id]:
            del users[user_id]
        if not users:
            del self._clients[branch_id]
        return 0

    async def client_streams(self, *, branch_id: int, user_id: int, client_id: str) -> int:
        return self._streams.get((branch_id, user_id, client_id), 0)

    async def viewers(self, *, branch_id: int) -> list[Viewer]:
        users = self._clients.get(branch_id, {})
        return [
            Viewer(user_id, self._names[user_id], len(clients))
            for user_id, clients in users.items()
        ]

    async def streams_of_user(self, *, user_id: int) -> int:
        return self._user_streams.get(user_id, 0)

    async def probe(self) -> bool:
        return True

    async def maintain(self) -> Upkeep:
        return Upkeep()

    async def close(self) -> None:
        self._streams.clear()
        self._clients.clear()
        self._user_streams.clear()
        self._names.clear()
