"""Cluster-wide presence in Redis: stream counts that survive nodes dying.

Counts live under ``<prefix>:presence:``:

* ``branch:<b>`` — hash ``<user>:<client>`` → open streams, cluster-wide;
* ``users`` — hash ``<user>`` → open streams on every branch (the
  ``MAX_STREAMS_PER_USER`` cap); ``names`` — hash ``<user>`` → display name;
* ``node:<id>`` — hash ``<b>:<user>:<client>`` → the streams *this node*
  contributed, so they can be taken back when the node is gone;
* ``lease:<id>`` — a key with a short TTL that the node keeps renewing;
* ``nodes`` — the set of registered nodes.

A node that stops renewing (SIGKILL, partition, a long stall) loses its
lease. Every node's ``maintain()`` (run about once a second by the
``Presence`` front) sweeps: one script finds the registered nodes without a
lease, removes them from ``nodes`` — the atomic claim, so one survivor wins
each lapsed node — subtracts their streams from the counts and returns them.
The front then publishes ``presence`` and starts the disconnect grace for
every client left with no stream anywhere.

Each node also keeps its own streams in memory, the truth about itself.
Whenever Redis disagrees — the node was swept while partitioned, Redis lost
its data, or a ``leave`` could not reach Redis — ``maintain()`` rewrites the
node's contribution from memory in one script (``resync``). Every change of
this node's counts goes through one ``asyncio.Lock`` so a resync never races
a join or leave of the same node.

Neither ``join`` nor ``leave`` fails while Redis is down: a stream opens
and closes whatever Redis says (reading must go on, docs/protocol.md "Redis
unreachable"). The change is made in memory and the node marked for a
resync, which ``maintain()`` runs as soon as Redis answers; meanwhile the
``MAX_STREAMS_PER_USER`` cap is checked against this node's own streams.
Reads raise ``Unavailable``. Once a call found Redis unreachable,
``reachable`` is False and no request waits on Redis again (a frozen Redis
would cost each one the command timeout): joins and leaves count in memory
at once, reads fail at once, and ``maintain()`` probes with a short timeout
until Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from typing import Any

from ...errors import Unavailable
from ..redisconn import DOWN_ERRORS, KEY_PREFIX, connect, unavailable
from .base import Lapsed, Upkeep, Viewer

__all__ = ["LEASE_TTL", "RedisPresenceBackend"]

log = logging.getLogger(__name__)

LEASE_TTL = 3.0  # seconds a node counts as alive after its last renewal
MAINTAIN_EVERY = 1.0
PROBE_TIMEOUT = 0.5  # seconds a probe of an unreachable Redis may take

_Key = tuple[int, int, str]

_LUA_HELPERS = """
local P, node, lease_ms = ARGV[1], ARGV[2], ARGV[3]
local nodes, nodekey, users, names = P .. 'nodes', P .. 'node:' .. node, P .. 'users', P .. 'names'
local function add(b, u, c, name, k)
  redis.call('HINCRBY', P .. 'branch:' .. b, u .. ':' .. c, k)
  redis.call('HINCRBY', users, u, k)
  redis.call('HSET', names, u, name)
end
local function sub(b, u, c, k)
  local bkey = P .. 'branch:' .. b
  local f = u .. ':' .. c
  local left = redis.call('HINCRBY', bkey, f, -k)
  if left <= 0 then redis.call('HDEL', bkey, f); left = 0 end
  if redis.call('HINCRBY', users, u, -k) <= 0 then
    redis.call('HDEL', users, u)
    redis.call('HDEL', names, u)
  end
  return left
end
local function split(f)
  return string.match(f, '^(%d+):(%d+):(.*)$')
end
local function alive()
  redis.call('SET', P .. 'lease:' .. node, '1', 'PX', lease_ms)
end
"""

# ARGV: P node lease_ms branch user client name max ('' = no cap)
# -> the client's streams on the branch; -1 over the cap; -2 node not registered
_JOIN = (
    _LUA_HELPERS
    + """
if redis.call('SISMEMBER', nodes, node) == 0 then return -2 end
local b, u, c, name, cap = ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
if cap ~= '' and tonumber(redis.call('HGET', users, u) or '0') >= tonumber(cap) then
  return -1
end
add(b, u, c, name, 1)
redis.call('HINCRBY', nodekey, b .. ':' .. u .. ':' .. c, 1)
alive()
return tonumber(redis.call('HGET', P .. 'branch:' .. b, u .. ':' .. c))
"""
)

# ARGV: P node lease_ms branch user client -> streams left; -2 Redis disagrees with us
_LEAVE = (
    _LUA_HELPERS
    + """
if redis.call('SISMEMBER', nodes, node) == 0 then return -2 end
local b, u, c = ARGV[4], ARGV[5], ARGV[6]
local nf = b .. ':' .. u .. ':' .. c
local mine = tonumber(redis.call('HGET', nodekey, nf) or '0')
if mine <= 0 then return -2 end
if mine == 1 then redis.call('HDEL', nodekey, nf) else redis.call('HINCRBY', nodekey, nf, -1) end
alive()
return sub(b, u, c, 1)
"""
)

# ARGV: P node lease_ms -> 1 renewed; 0 not registered (swept, or Redis lost its data)
_RENEW = (
    _LUA_HELPERS
    + """
if redis.call('SISMEMBER', nodes, node) == 0 then return 0 end
alive()
return 1
"""
)

# ARGV: P node lease_ms, then (branch user client name count)*
# Replace whatever Redis holds for this node by the node's own truth.
# -> the branches whose counts changed
_RESYNC = (
    _LUA_HELPERS
    + """
local old = {}
local flat = redis.call('HGETALL', nodekey)
for i = 1, #flat, 2 do old[flat[i]] = tonumber(flat[i + 1]) end
local new, newname = {}, {}
for i = 4, #ARGV, 5 do
  local f = ARGV[i] .. ':' .. ARGV[i + 1] .. ':' .. ARGV[i + 2]
  new[f] = tonumber(ARGV[i + 4])
  newname[f] = ARGV[i + 3]
end
local changed = {}
for f, k in pairs(old) do
  if new[f] ~= k then
    local b, u, c = split(f)
    sub(b, u, c, k)
    changed[b] = true
  end
end
redis.call('DEL', nodekey)
for f, k in pairs(new) do
  local b, u, c = split(f)
  if old[f] ~= k then
    add(b, u, c, newname[f], k)
    changed[b] = true
  end
  redis.call('HSET', nodekey, f, k)
end
redis.call('SADD', nodes, node)
alive()
local out = {}
for b, _ in pairs(changed) do table.insert(out, b) end
return out
"""
)

# ARGV: P node(self) lease_ms -> flat (branch user client left)* of every lapsed node
_SWEEP = (
    _LUA_HELPERS
    + """
local out = {}
for _, other in ipairs(redis.call('SMEMBERS', nodes)) do
  if other ~= node and redis.call('EXISTS', P .. 'lease:' .. other) == 0 then
    redis.call('SREM', nodes, other)
    local okey = P .. 'node:' .. other
    local flat = redis.call('HGETALL', okey)
    for i = 1, #flat, 2 do
      local b, u, c = split(flat[i])
      local left = sub(b, u, c, tonumber(flat[i + 1]))
      table.insert(out, b); table.insert(out, u); table.insert(out, c)
      table.insert(out, tostring(left))
    end
    redis.call('DEL', okey)
  end
end
return out
"""
)

# ARGV: P node lease_ms — a node leaving on purpose takes its streams with it.
_UNREGISTER = (
    _LUA_HELPERS
    + """
local flat = redis.call('HGETALL', nodekey)
for i = 1, #flat, 2 do
  local b, u, c = split(flat[i])
  sub(b, u, c, tonumber(flat[i + 1]))
end
redis.call('DEL', nodekey, P .. 'lease:' .. node)
redis.call('SREM', nodes, node)
return 1
"""
)


# ARGV: P node lease_ms branch -> flat (user name clients)*, read in one step
_VIEWERS = (
    _LUA_HELPERS
    + """
local counts = redis.call('HGETALL', P .. 'branch:' .. ARGV[4])
local clients, order = {}, {}
for i = 1, #counts, 2 do
  if tonumber(counts[i + 1]) > 0 then
    local u = string.match(counts[i], '^(%d+):')
    if not clients[u] then clients[u] = 0; table.insert(order, u) end
    clients[u] = clients[u] + 1
  end
end
local out = {}
for _, u in ipairs(order) do
  table.insert(out, u)
  table.insert(out, redis.call('HGET', names, u) or '')
  table.insert(out, tostring(clients[u]))
end
return out
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def node_id() -> str:
    """Unique per process start: host, pid and randomness (pids get reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class RedisPresenceBackend:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = KEY_PREFIX,
        node: str | None = None,
        lease_ttl: float = LEASE_TTL,
        maintain_every: float = MAINTAIN_EVERY,
    ) -> None:
        if maintain_every >= lease_ttl:
            raise ValueError("the lease must outlive several renewals")
        self.node = node or node_id()
        self.lease_ttl = lease_ttl
        self.maintain_every = maintain_every
        self._prefix = f"{prefix}:presence:"
        self._redis = connect(url)
        self._join = self._redis.register_script(_JOIN)
        self._leave = self._redis.register_script(_LEAVE)
        self._renew = self._redis.register_script(_RENEW)
        self._resync = self._redis.register_script(_RESYNC)
        self._sweep = self._redis.register_script(_SWEEP)
        self._unregister = self._redis.register_script(_UNREGISTER)
        self._viewers = self._redis.register_script(_VIEWERS)
        # This node's own streams: the truth a resync writes back.
        self._mine: dict[_Key, int] = {}
        self._names: dict[int, str] = {}
        self._dirty = False
        self._lock = asyncio.Lock()
        self.reachable = True
        self._probe = connect(url, retries=0, command_timeout=PROBE_TIMEOUT)

    def _head(self) -> list[Any]:
        return [self._prefix, self.node, int(self.lease_ttl * 1000)]

    # -- this node's streams ---------------------------------------------------

    async def join(
        self,
        *,
        branch_id: int,
        user_id: int,
        name: str,
        client_id: str,
        max_user_streams: int | None = None,
    ) -> int | None:
        args = [
            *self._head(),
            branch_id,
            user_id,
            client_id,
            name,
            "" if max_user_streams is None else max_user_streams,
        ]
        key = (branch_id, user_id, client_id)
        async with self._lock:
            if not self.reachable:
                return self._join_locally(key, name, max_user_streams)
            try:
                if self._dirty:
                    await self._resync_locked()
                count = int(await self._join(args=args))
                if count == -2:
                    await self._resync_locked()
                    count = int(await self._join(args=args))
            except DOWN_ERRORS as exc:
                self._unreachable(exc)
                return self._join_locally(key, name, max_user_streams)
            if count < 0:
                return None
            self._count_in(key, name)
            return count

    def _join_locally(self, key: _Key, name: str, max_user_streams: int | None) -> int | None:
        """Redis is away: count the stream on this node; ``maintain()`` writes it back.

        The cap then holds per node (what this node alone has open), the only
        count there is until Redis answers again.
        """
        user_id = key[1]
        if max_user_streams is not None:
            mine = sum(n for (_b, user, _c), n in self._mine.items() if user == user_id)
            if mine >= max_user_streams:
                return None
        self._dirty = True
        self._count_in(key, name)
        return self._mine[key]

    def _unreachable(self, exc: BaseException) -> None:
        if self.reachable:
            log.warning("presence: Redis unreachable, counting streams on this node: %r", exc)
        self.reachable = False
        self._dirty = True

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        """A Redis call: refused at once while unreachable; a failure marks it so."""
        if not self.reachable:
            raise Unavailable(f"{what}: Redis is not reachable right now")
        try:
            with unavailable(what):
                yield
        except Unavailable as exc:
            self._unreachable(exc.__cause__ or exc)
            raise

    def _count_in(self, key: _Key, name: str) -> None:
        self._mine[key] = self._mine.get(key, 0) + 1
        self._names[key[1]] = name

    async def leave(self, *, branch_id: int, user_id: int, client_id: str) -> int:
        key = (branch_id, user_id, client_id)
        async with self._lock:
            if self._mine.get(key, 0) <= 0:
                return await self._count_or_zero(key)
            self._mine[key] -= 1
            if not self._mine[key]:
                del self._mine[key]
            if not self.reachable:
                self._dirty = True
                return self._mine.get(key, 0)
            try:
                if not self._dirty:
                    left = int(await self._leave(args=[*self._head(), *key]))
                    if left != -2:
                        return left
                await self._resync_locked()
            except Exception as exc:
                # The stream is closed whatever Redis says; tell Redis once it is back.
                if not self._dirty:
                    log.warning("presence: could not count a stream out, will resync: %r", exc)
                self._dirty = True
                if isinstance(exc, DOWN_ERRORS):
                    self._unreachable(exc)
                return self._mine.get(key, 0)
        return await self._count_or_zero(key)

    async def _count_or_zero(self, key: _Key) -> int:
        try:
            return await self.client_streams(branch_id=key[0], user_id=key[1], client_id=key[2])
        except Exception:
            return self._mine.get(key, 0)

    async def _resync_locked(self) -> set[int]:
        args: list[Any] = self._head()
        for (branch_id, user_id, client_id), count in self._mine.items():
            args += [branch_id, user_id, client_id, self._names.get(user_id, ""), count]
        changed = await self._resync(args=args)
        self._dirty = False
        return {int(_text(b)) for b in changed}

    # -- the cluster -----------------------------------------------------------

    async def maintain(self) -> Upkeep:
        """Renew our lease (resyncing when Redis forgot us) and sweep lapsed nodes."""
        if not await self.probe():
            raise Unavailable("presence upkeep: Redis is not reachable right now")
        changed: set[int] = set()
        async with self._lock:
            with self._call("renewing the presence lease"):
                if self._dirty or not int(await self._renew(args=self._head())):
                    changed = await self._resync_locked()
                    if self._mine:
                        log.info(
                            "presence: wrote this node's %d open stream(s) back to Redis",
                            sum(self._mine.values()),
                        )
        with self._call("sweeping lapsed nodes"):
            flat = [_text(v) for v in await self._sweep(args=self._head())]
        lapsed = tuple(
            Lapsed(int(flat[i]), int(flat[i + 1]), flat[i + 2], int(flat[i + 3]))
            for i in range(0, len(flat), 4)
        )
        changed.update(item.branch_id for item in lapsed)
        if lapsed:
            log.warning("presence: took over %d stream(s) of nodes whose lease lapsed", len(lapsed))
        return Upkeep(lapsed=lapsed, changed_branches=frozenset(changed))

    async def probe(self) -> bool:
        """Whether Redis answers; an unreachable one is pinged with a short timeout.

        Outside the lock, so joins and leaves go on meanwhile.
        """
        if self.reachable:
            return True
        try:
            await self._probe.ping()
        except DOWN_ERRORS:
            return False
        self.reachable = True
        log.info("presence: Redis answers again")
        return True

    async def client_streams(self, *, branch_id: int, user_id: int, client_id: str) -> int:
        with self._call("reading presence"):
            value = await self._redis.hget(
                f"{self._prefix}branch:{branch_id}", f"{user_id}:{client_id}"
            )
        return max(0, int(value or 0))

    async def viewers(self, *, branch_id: int) -> list[Viewer]:
        with self._call("reading presence"):
            flat = [_text(v) for v in await self._viewers(args=[*self._head(), branch_id])]
        return [Viewer(int(flat[i]), flat[i + 1], int(flat[i + 2])) for i in range(0, len(flat), 3)]

    async def streams_of_user(self, *, user_id: int) -> int:
        with self._call("reading presence"):
            value = await self._redis.hget(f"{self._prefix}users", str(user_id))
        return max(0, int(value or 0))

    async def close(self) -> None:
        """Leave the cluster on purpose: our streams stop counting at once."""
        async with self._lock:
            self._mine.clear()
            with contextlib.suppress(*DOWN_ERRORS):
                async with asyncio.timeout(2.0):
                    await self._unregister(args=self._head())
        await self._redis.aclose()
        await self._probe.aclose()
