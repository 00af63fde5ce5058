"""Row presence in Redis, shared by every node. Keys, under ``<prefix>:rows:``:

* ``<branch>`` — a hash ``<user>:<client>`` → the spot as JSON;
* ``<branch>:exp`` — a sorted set ``<user>:<client>`` → when the spot lapses.

Each method is one Lua script. The hash gets a Redis TTL past the longest
spot, so a branch nobody reports on any more leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from ...jsonutil import dumps, loads
from ..redisconn import KEY_PREFIX, connect, unavailable
from .base import Spot

__all__ = ["RedisRowPresenceBackend"]

_KEY_TTL_S = 600

# ARGV: prefix branch member json exp ttl -> 1 if what others see changed
_PUT = """
local spots = ARGV[1] .. ARGV[2]
local before = redis.call('HGET', spots, ARGV[3])
redis.call('HSET', spots, ARGV[3], ARGV[4])
redis.call('ZADD', spots .. ':exp', ARGV[5], ARGV[3])
redis.call('EXPIRE', spots, ARGV[6])
redis.call('EXPIRE', spots .. ':exp', ARGV[6])
if before == ARGV[4] then return 0 end
return 1
"""

# ARGV: prefix branch member -> 1 if it was there
_REMOVE = """
local spots = ARGV[1] .. ARGV[2]
redis.call('ZREM', spots .. ':exp', ARGV[3])
return redis.call('HDEL', spots, ARGV[3])
"""

# ARGV: prefix branch now -> the live spots' JSON
_SPOTS = """
local spots = ARGV[1] .. ARGV[2]
for _, member in ipairs(redis.call('ZRANGEBYSCORE', spots .. ':exp', '-inf', ARGV[3])) do
  redis.call('HDEL', spots, member)
  redis.call('ZREM', spots .. ':exp', member)
end
return redis.call('HVALS', spots)
"""


class RedisRowPresenceBackend:
    def __init__(self, url: str, *, prefix: str = KEY_PREFIX) -> None:
        self._prefix = f"{prefix}:rows:"
        self._redis = connect(url)
        self._put = self._redis.register_script(_PUT)
        self._remove = self._redis.register_script(_REMOVE)
        self._spots = self._redis.register_script(_SPOTS)

    async def put(self, *, branch_id: int, spot: Spot, expires_at: float) -> bool:
        args: list[Any] = [
            self._prefix,
            branch_id,
            f"{spot.user_id}:{spot.client_id}",
            dumps(spot.to_record()),
            repr(expires_at),
            _KEY_TTL_S,
        ]
        with unavailable("reporting row presence"):
            return bool(await self._put(args=args))

    async def remove(self, *, branch_id: int, user_id: int, client_id: str) -> bool:
        args: list[Any] = [self._prefix, branch_id, f"{user_id}:{client_id}"]
        with unavailable("reporting row presence"):
            return bool(await self._remove(args=args))

    async def spots(self, *, branch_id: int, now: float) -> list[Spot]:
        args: list[Any] = [self._prefix, branch_id, repr(now)]
        with unavailable("reading row presence"):
            rows = await self._spots(args=args)
        return [Spot.from_record(loads(raw)) for raw in rows]

    async def close(self) -> None:
        await self._redis.aclose()
