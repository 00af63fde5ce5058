"""Lock requests in Redis, shared by every node. Keys, under ``<prefix>:lockreq:``:

* ``all`` — a hash request id → the request as JSON;
* ``field:<case>:<field>`` — the id of the field's pending request, with a
  Redis TTL as a safety net only (``take`` deletes it).

``add`` and ``take`` are one Lua script each, so two nodes never both add a
request for one field, nor both take (answer or time out) the same one.
"""

from __future__ import annotations

from typing import Any

from ...jsonutil import dumps, loads
from ..redisconn import KEY_PREFIX, connect, unavailable
from .base import LockRequest

__all__ = ["RedisLockRequestBackend"]

_FIELD_TTL_MS = 600_000

# ARGV: prefix id member json ttl_ms -> the pending request's JSON
_ADD = """
local prefix, id, member = ARGV[1], ARGV[2], ARGV[3]
local key = prefix .. 'field:' .. member
local existing = redis.call('GET', key)
if existing then
  local found = redis.call('HGET', prefix .. 'all', existing)
  if found then return found end
end
redis.call('HSET', prefix .. 'all', id, ARGV[4])
redis.call('SET', key, id, 'PX', ARGV[5])
return ARGV[4]
"""

# ARGV: prefix id -> the request's JSON, or false
_TAKE = """
local prefix, id = ARGV[1], ARGV[2]
local found = redis.call('HGET', prefix .. 'all', id)
if not found then return false end
redis.call('HDEL', prefix .. 'all', id)
local request = cjson.decode(found)
local key = prefix .. 'field:' .. request['case_id'] .. ':' .. request['field']
if redis.call('GET', key) == id then redis.call('DEL', key) end
return found
"""


def _request(raw: Any) -> LockRequest:
    record: dict[str, Any] = loads(raw)
    return LockRequest.from_record(record)


class RedisLockRequestBackend:
    def __init__(self, url: str, *, prefix: str = KEY_PREFIX) -> None:
        self._prefix = f"{prefix}:lockreq:"
        self._redis = connect(url)
        self._add = self._redis.register_script(_ADD)
        self._take = self._redis.register_script(_TAKE)

    async def add(self, request: LockRequest) -> LockRequest:
        args: list[Any] = [
            self._prefix,
            request.id,
            f"{request.case_id}:{request.field}",
            dumps(request.to_record()),
            _FIELD_TTL_MS,
        ]
        with unavailable("asking for the lock"):
            return _request(await self._add(args=args))

    async def get(self, request_id: str) -> LockRequest | None:
        with unavailable("reading the lock request"):
            raw = await self._redis.hget(self._prefix + "all", request_id)  # type: ignore[misc]
        return None if raw is None else _request(raw)

    async def take(self, request_id: str) -> LockRequest | None:
        with unavailable("answering the lock request"):
            raw = await self._take(args=[self._prefix, request_id])
        return _request(raw) if raw else None

    async def pending(self) -> list[LockRequest]:
        with unavailable("reading lock requests"):
            rows = await self._redis.hvals(self._prefix + "all")  # type: ignore[misc]
        return [_request(raw) for raw in rows]

    async def close(self) -> None:
        await self._redis.aclose()
