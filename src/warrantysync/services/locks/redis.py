"""Field locks in Redis, shared by every process of a deployment.

Each method is one Lua script (or one pipelined read), so it is one atomic
step however many processes call at once. Keys, under ``<prefix>:locks:``:

* ``lock:<case>:<field>`` — a hash ``branch user name client token exp
  since active``; ``exp`` is the deadline, ``since`` when the token was granted
  and ``active`` the holder's last sign of work
  (epoch seconds, written by Python's ``repr`` so they read back exactly).
  The key also has a Redis TTL well past the deadline, only as a safety
  net: the release event comes from the deadline set.
* ``deadlines`` — a sorted set ``<case>:<field>`` → ``exp``. ``claim_expired``
  takes what is due and deletes it inside one script, so each expiry is
  handed to exactly one caller across the cluster.
* ``branch:<id>`` — the ``<case>:<field>`` members locked on a branch, for
  snapshots and ``release_owner``.
* ``user:<id>`` — the members locked by a user on any branch, for the
  per-user cap (a few members: ``acquire`` reads them all).
* ``bar:<case>:<field>:<user>`` — after a forced release, the moment until
  which that user may not take the field again (with a Redis TTL past it).

Time comes from the caller (``now``), as in every lock backend: one clock
(the front's) rules the policy. Tokens come from the front too; they are
random, so a Redis that lost its data never hands out an old one again.

When Redis cannot be reached every method raises ``errors.Unavailable``.
The scripts build key names from the prefix, so they need a single Redis
(with replicas or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..redisconn import KEY_PREFIX, connect, unavailable
from .base import Acquired, Lock, Owner, Refusal

__all__ = ["RedisLockBackend"]

# Redis keeps a lock's key this much longer than its deadline, so a missed
# sweep (Redis down for a while) still finds it and announces its expiry.
_KEY_GRACE_MS = 300_000
_CLAIM_BATCH = 500
_REFUSALS: dict[str, Refusal] = {
    "locked": "locked",
    "barred": "barred",
    "too_many": "too_many",
    "unattended": "unattended",
}

# A lock travels out of Lua as a flat list of strings (Lua numbers would be
# truncated to integers): case, field, branch, user, name, client, token, exp,
# since, active (either missing for a lock written before it existed).
_LUA_HELPERS = """
local prefix = ARGV[1]
local function lock_key(member) return prefix .. 'lock:' .. member end
local function load(member)
  local h = redis.call('HMGET', lock_key(member),
    'branch', 'user', 'name', 'client', 'token', 'exp', 'since', 'active')
  if not h[1] then return nil end
  return h
end
local function flat(member, h)
  local case, field = string.match(member, '^(%d+):(.*)$')
  return {case, field, h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]}
end
local function remove(member, h)
  redis.call('DEL', lock_key(member))
  redis.call('ZREM', prefix .. 'deadlines', member)
  redis.call('SREM', prefix .. 'branch:' .. h[1], member)
  redis.call('SREM', prefix .. 'user:' .. h[2], member)
end
"""

# ARGV: prefix member branch user name client token exp now key_ttl_ms cap within
# ('' = no cap / no renewal limit) -> {outcome, lock, displaced, until}; see Acquired.
_ACQUIRE = (
    _LUA_HELPERS
    + """
local member, branch, user, name, client, token, exp, now, ttl_ms, cap, within =
  ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], tonumber(ARGV[9]), ARGV[10],
  ARGV[11], ARGV[12]
local since = ARGV[9]
local active = ARGV[9]
local cur = load(member)
local displaced = {}
if cur and tonumber(cur[6]) > now then
  if cur[2] ~= user or cur[4] ~= client then
    return {'locked', flat(member, cur), displaced, ''}
  end
  since = cur[7] or since  -- a lock from before `since`: its clock starts now
  if within ~= '' and now - tonumber(since) > tonumber(within) then
    return {'unattended', flat(member, cur), displaced, ''}
  end
  token = cur[5]  -- a live renewal keeps its token
  active = cur[8] or since
  branch = cur[1]
else
  local bar = redis.call('GET', prefix .. 'bar:' .. member .. ':' .. user)
  if bar and tonumber(bar) > now then return {'barred', {}, displaced, bar} end
  if cap ~= '' then
    local mine = prefix .. 'user:' .. user
    local held, first = 0, nil
    for _, other in ipairs(redis.call('SMEMBERS', mine)) do
      local h = load(other)
      if not h or h[2] ~= user then
        redis.call('SREM', mine, other)
      elseif tonumber(h[6]) > now then
        held = held + 1
        if not first or tonumber(h[6]) < tonumber(first) then first = h[6] end
      end
    end
    if held >= tonumber(cap) then return {'too_many', {}, displaced, first or ''} end
  end
  if cur then
    displaced = flat(member, cur)
    remove(member, cur)
  end
end
local key = lock_key(member)
redis.call('HSET', key, 'branch', branch, 'user', user, 'name', name, 'client', client,
  'token', token, 'exp', exp, 'since', since, 'active', active)
redis.call('PEXPIRE', key, ttl_ms)
redis.call('ZADD', prefix .. 'deadlines', exp, member)
redis.call('SADD', prefix .. 'branch:' .. branch, member)
redis.call('SADD', prefix .. 'user:' .. user, member)
return {'granted', {string.match(member, '^(%d+):'), string.match(member, '^%d+:(.*)$'),
  branch, user, name, client, token, exp, since, active}, displaced, ''}
"""
)

# ARGV: prefix member user client token ('' = any)
_RELEASE = (
    _LUA_HELPERS
    + """
local member, user, client, token = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local cur = load(member)
if not cur then return {} end
local forced = user == '' and client == ''
if not forced and (cur[2] ~= user or cur[4] ~= client) then return {} end
if token ~= '' and cur[5] ~= token then return {} end
remove(member, cur)
return flat(member, cur)
"""
)

# ARGV: prefix member by_user bar_until bar_ttl_ms ('' = no bar)
_FORCE_RELEASE = (
    _LUA_HELPERS
    + """
local member, by_user, bar_until, bar_ms = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local cur = load(member)
if not cur then return {} end
remove(member, cur)
if bar_until ~= '' and cur[2] ~= by_user then
  redis.call('SET', prefix .. 'bar:' .. member .. ':' .. cur[2], bar_until, 'PX', bar_ms)
end
return flat(member, cur)
"""
)

# ARGV: prefix member user client now
_TOUCH = (
    _LUA_HELPERS
    + """
local member, now = ARGV[2], tonumber(ARGV[5])
local cur = load(member)
if not cur or cur[2] ~= ARGV[3] or cur[4] ~= ARGV[4] or tonumber(cur[6]) <= now then return {} end
redis.call('HSET', lock_key(member), 'active', ARGV[5])
cur[8] = ARGV[5]
return flat(member, cur)
"""
)

# ARGV: prefix member holder_user holder_client user name client token exp now key_ttl_ms
# -> {old lock, new lock} or {}
_TRANSFER = (
    _LUA_HELPERS
    + """
local member, now = ARGV[2], tonumber(ARGV[10])
local cur = load(member)
if not cur or cur[2] ~= ARGV[3] or cur[4] ~= ARGV[4] or tonumber(cur[6]) <= now then return {} end
local old = flat(member, cur)
remove(member, cur)
local key = lock_key(member)
redis.call('HSET', key, 'branch', cur[1], 'user', ARGV[5], 'name', ARGV[6], 'client', ARGV[7],
  'token', ARGV[8], 'exp', ARGV[9], 'since', ARGV[10], 'active', ARGV[10])
redis.call('PEXPIRE', key, ARGV[11])
redis.call('ZADD', prefix .. 'deadlines', ARGV[9], member)
redis.call('SADD', prefix .. 'branch:' .. cur[1], member)
redis.call('SADD', prefix .. 'user:' .. ARGV[5], member)
return {old, flat(member, load(member))}
"""
)

# ARGV: prefix branch
_FOR_BRANCH = (
    _LUA_HELPERS
    + """
local set = prefix .. 'branch:' .. ARGV[2]
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', set)) do
  local h = load(member)
  if h then table.insert(out, flat(member, h)) else redis.call('SREM', set, member) end
end
return out
"""
)

# ARGV: prefix now batch
_CLAIM_EXPIRED = (
    _LUA_HELPERS
    + """
local deadlines = prefix .. 'deadlines'
local due = redis.call('ZRANGEBYSCORE', deadlines, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local now = tonumber(ARGV[2])
local out = {}
for _, member in ipairs(due) do
  local h = load(member)
  if not h then
    redis.call('ZREM', deadlines, member)
  elseif tonumber(h[6]) <= now then
    remove(member, h)
    table.insert(out, flat(member, h))
  else
    redis.call('ZADD', deadlines, h[6], member)  -- a stale score; the hash rules
  end
end
return out
"""
)

# ARGV: prefix branch user client
_RELEASE_OWNER = (
    _LUA_HELPERS
    + """
local set = prefix .. 'branch:' .. ARGV[2]
local out = {}
for _, member in ipairs(redis.call('SMEMBERS', set)) do
  local h = load(member)
  if not h then
    redis.call('SREM', set, member)
  elseif h[2] == ARGV[3] and h[4] == ARGV[4] then
    remove(member, h)
    table.insert(out, flat(member, h))
  end
end
return out
"""
)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _lock(row: Sequence[Any]) -> Lock:
    case, field, branch, user, name, client, token, exp = (_text(v) for v in row[:8])
    since = row[8] if len(row) > 8 else None
    active = row[9] if len(row) > 9 else None
    return Lock(
        case_id=int(case),
        branch_id=int(branch),
        field=field,
        owner=Owner(int(user), name, client),
        token=token,
        expires_at=float(exp),
        acquired_at=0.0 if since is None else float(_text(since)),
        active_at=0.0 if active is None else float(_text(active)),
    )


class RedisLockBackend:
    def __init__(self, url: str, *, prefix: str = KEY_PREFIX) -> None:
        self._prefix = f"{prefix}:locks:"
        self._redis = connect(url)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._force_release = self._redis.register_script(_FORCE_RELEASE)
        self._for_branch = self._redis.register_script(_FOR_BRANCH)
        self._claim_expired = self._redis.register_script(_CLAIM_EXPIRED)
        self._release_owner = self._redis.register_script(_RELEASE_OWNER)
        self._touch = self._redis.register_script(_TOUCH)
        self._transfer = self._redis.register_script(_TRANSFER)

    async def acquire(
        self,
        *,
        case_id: int,
        branch_id: int,
        field: str,
        owner: Owner,
        token: str,
        ttl: float,
        now: float,
        max_per_user: int | None = None,
        renew_within: float | None = None,
    ) -> Acquired:
        expires_at = now + ttl
        args: list[Any] = [
            self._prefix,
            f"{case_id}:{field}",
            branch_id,
            owner.user_id,
            owner.name,
            owner.client_id,
            token,
            repr(expires_at),
            repr(now),
            int(ttl * 1000) + _KEY_GRACE_MS,
            "" if max_per_user is None else max_per_user,
            "" if renew_within is None else repr(renew_within),
        ]
        with unavailable("taking the lock"):
            outcome, lock, displaced, until = await self._acquire(args=args)
        refusal = _text(outcome)
        return Acquired(
            _lock(lock) if lock else None,
            granted=refusal == "granted",
            displaced=_lock(displaced) if displaced else None,
            refusal=None if refusal == "granted" else _REFUSALS[refusal],
            until=float(_text(until)) if until else None,
        )

    async def release(
        self,
        *,
        case_id: int,
        field: str,
        user_id: int | None,
        client_id: str | None,
        token: str | None = None,
    ) -> Lock | None:
        if (user_id is None) != (client_id is None):
            # An owner is both; half an owner matches nobody (as in memory).
            return None
        args = [
            self._prefix,
            f"{case_id}:{field}",
            "" if user_id is None else user_id,
            client_id or "",
            token or "",
        ]
        with unavailable("releasing the lock"):
            row = await self._release(args=args)
        return _lock(row) if row else None

    async def force_release(
        self,
        *,
        case_id: int,
        field: str,
        by_user_id: int,
        bar_until: float | None,
        now: float,
    ) -> Lock | None:
        bar_ms = 0 if bar_until is None else int((bar_until - now) * 1000) + _KEY_GRACE_MS
        args: list[Any] = [
            self._prefix,
            f"{case_id}:{field}",
            by_user_id,
            "" if bar_until is None else repr(bar_until),
            bar_ms,
        ]
        with unavailable("releasing the lock"):
            row = await self._force_release(args=args)
        return _lock(row) if row else None

    async def touch(
        self, *, case_id: int, field: str, user_id: int, client_id: str, now: float
    ) -> Lock | None:
        args: list[Any] = [self._prefix, f"{case_id}:{field}", user_id, client_id, repr(now)]
        with unavailable("marking the lock active"):
            row = await self._touch(args=args)
        return _lock(row) if row else None

    async def transfer(
        self,
        *,
        case_id: int,
        field: str,
        holder: Owner,
        to: Owner,
        token: str,
        ttl: float,
        now: float,
    ) -> tuple[Lock, Lock] | None:
        args: list[Any] = [
            self._prefix,
            f"{case_id}:{field}",
            holder.user_id,
            holder.client_id,
            to.user_id,
            to.name,
            to.client_id,
            token,
            repr(now + ttl),
            repr(now),
            int(ttl * 1000) + _KEY_GRACE_MS,
        ]
        with unavailable("handing the lock over"):
            rows = await self._transfer(args=args)
        if not rows:
            return None
        return _lock(rows[0]), _lock(rows[1])

    async def get(self, *, case_id: int, field: str, now: float) -> Lock | None:
        return (await self.get_many(case_id=case_id, fields=[field], now=now)).get(field)

    async def get_many(self, *, case_id: int, fields: Sequence[str], now: float) -> dict[str, Lock]:
        names = ("branch", "user", "name", "client", "token", "exp", "since", "active")
        pipe = self._redis.pipeline(transaction=False)
        for field in fields:
            pipe.hmget(f"{self._prefix}lock:{case_id}:{field}", names)
        with unavailable("checking locks"):
            rows = await pipe.execute()
        found: dict[str, Lock] = {}
        for field, row in zip(fields, rows, strict=True):
            if row[0] is None:
                continue
            lock = _lock([case_id, field, *row])
            if lock.is_live(now):
                found[field] = lock
        return found

    async def for_branch(self, *, branch_id: int, now: float) -> list[Lock]:
        with unavailable("reading locks"):
            rows = await self._for_branch(args=[self._prefix, branch_id])
        return [lock for lock in map(_lock, rows) if lock.is_live(now)]

    async def claim_expired(self, *, now: float) -> list[Lock]:
        claimed: list[Lock] = []
        while True:
            with unavailable("sweeping expired locks"):
                rows = await self._claim_expired(args=[self._prefix, repr(now), _CLAIM_BATCH])
            claimed.extend(map(_lock, rows))
            if len(rows) < _CLAIM_BATCH:
                return claimed

    async def release_owner(self, *, branch_id: int, user_id: int, client_id: str) -> list[Lock]:
        with unavailable("releasing the client's locks"):
            rows = await self._release_owner(args=[self._prefix, branch_id, user_id, client_id])
        return [_lock(row) for row in rows]

    async def close(self) -> None:
        await self._redis.aclose()
