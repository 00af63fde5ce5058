"""Lock requests in one process: two dicts, each method without an await inside."""

from __future__ import annotations

from .base import LockRequest


class MemoryLockRequestBackend:
    def __init__(self) -> None:
        self._requests: dict[str, LockRequest] = {}
        self._by_field: dict[tuple[int, str], str] = {}

    async def add(self, request: LockRequest) -> LockRequest:
        key = (request.case_id, request.field)
        existing = self._by_field.get(key)
        if existing is not None and existing in self._requests:
            return self._requests[existing]
        self._requests[request.id] = request
        self._by_field[key] = request.id
        return request

    async def get(self, request_id: str) -> LockRequest | None:
        return self._requests.get(request_id)

    async def take(self, request_id: str) -> LockRequest | None:
        request = self._requests.pop(request_id, None)
        if request is not None:
            key = (request.case_id, request.field)
            if self._by_field.get(key) == request_id:
                del self._by_field[key]
        return request

    async def pending(self) -> list[LockRequest]:
        return list(self._requests.values())

    async def close(self) -> None:
        self._requests.clear()
        self._by_field.clear()
