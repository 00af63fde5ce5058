"""Rate limits for writes, lock calls, failed logins and requests per IP, on ``limits``.

Settings use the ``limits`` string notation, several limits joined by ``;``
(all must hold), or ``off``:

* ``RATE_LIMIT_WRITES`` (``30/second;1200/minute``) and ``RATE_LIMIT_LOCKS``
  (``30/second``): per user; every request counts (``hit_write``/``hit_lock``).
* ``RATE_LIMIT_LOCK_REQUESTS`` (``20/minute``): per user, asking for a locked
  field and answering such a request (``hit_lock_request``). Row presence
  reports count against ``RATE_LIMIT_LOCKS`` in a bucket of their own
  (``hit_row_presence``).
* ``RATE_LIMIT_LOGIN`` (``5/15minutes;50/15minutes``): the *first* item is
  per account (the email, case-insensitive), the *second* per client IP; a
  single item limits accounts only. Only failed logins count
  (``login_failed``); an attempt refused with 429 counts for nothing, and
  while either the account or the IP is exhausted every attempt is refused,
  the right password included (``check_login`` before checking it).
* ``RATE_LIMIT_IP`` (``60/second;3000/minute``): every request per client IP
  (``hit_ip``; the IP is the peer, or the ``X-Forwarded-For`` client when the
  peer is a trusted proxy). Generous on purpose: a whole branch office often
  shares one NAT address; this limit stops floods, the per-user ones shape use.

Windows are moving windows, so ``retry_after`` is exactly when the oldest
counted hit leaves the window. Storage is in-process (``memory://``) by
default, or Redis so that all processes share one count.

When the storage cannot be reached, writes, lock calls and requests per IP
are *not* limited (one warning per outage, one line when it is back):
refusing every edit because Redis blinked is worse, and lock calls answer
503 anyway. Logins fail closed with ``Unavailable``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from ..errors import RateLimited, Unavailable
from .metrics import Metrics

__all__ = ["RateLimits", "parse_setting", "storage_uri"]

logger = logging.getLogger(__name__)

_KEY_PREFIX = "warrantysync:limits"


def parse_setting(value: str) -> list[RateLimitItem]:
    """``off`` → no limit; else ``limits`` notation, e.g. ``30/second;1200/minute``."""
    value = value.strip()
    if value.lower() == "off":
        return []
    try:
        return parse_many(value)
    except ValueError:
        raise ValueError(
            f"invalid rate limit {value!r}: use e.g. '30/second;1200/minute' or 'off'"
        ) from None


def storage_uri(url: str | None) -> str:
    """Our Redis URL in the form the async storages of ``limits`` expect."""
    if url is None or url == "memory://":
        return "async+memory://"
    for ours, theirs in (
        ("redis://", "async+redis://"),
        ("rediss://", "async+rediss://"),
        ("unix://", "async+redis+unix://"),
    ):
        if url.startswith(ours):
            return theirs + url.removeprefix(ours)
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(f"unsupported rate limit storage scheme {scheme!r}: use memory:// or redis://")


class RateLimits:
    def __init__(
        self,
        *,
        storage_url: str | None,
        writes: str,
        locks: str,
        login: str,
        ip: str = "off",
        lock_requests: str = "off",
        metrics: Metrics | None = None,
    ) -> None:
        self._writes = parse_setting(writes)
        self._locks = parse_setting(locks)
        self._lock_requests = parse_setting(lock_requests)
        self._ip = parse_setting(ip)
        login_items = parse_setting(login)
        if len(login_items) > 2:
            raise ValueError(f"invalid login rate limit {login!r}: '<per account>;<per IP>'")
        self._login_account = login_items[:1]
        self._login_ip = login_items[1:2]
        uri = storage_uri(storage_url)
        options: dict[str, Any] = {}
        if not uri.startswith("async+memory"):
            options = {
                "implementation": "redispy",
                "key_prefix": _KEY_PREFIX,
                # A Redis that stopped answering must not hold every write for
                # the OS's TCP timeout; failing fast lets writes pass unlimited.
                "socket_connect_timeout": 1.0,
                "socket_timeout": 2.0,
            }
        storage = storage_from_string(uri, wrap_exceptions=True, **options)
        assert isinstance(storage, Storage), uri  # async+ schemes give async storages
        self._storage = storage
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._metrics = metrics
        self._storage_down = False

    async def hit_write(self, user_id: int) -> None:
        """Count a PATCH/POST/DELETE; ``RateLimited`` when the user is over the limit."""
        await self._hit_open(self._writes, "writes", str(user_id), "too many changes")

    async def hit_lock(self, user_id: int) -> None:
        """Count a lock PUT/DELETE; ``RateLimited`` when the user is over the limit."""
        await self._hit_open(self._locks, "locks", str(user_id), "too many lock requests")

    async def hit_lock_request(self, user_id: int) -> None:
        """Count asking for a locked field, or answering; ``RateLimited`` over the limit."""
        await self._hit_open(
            self._lock_requests, "lock-requests", str(user_id), "too many requests for fields"
        )

    async def hit_row_presence(self, user_id: int) -> None:
        """Count a row presence report (the lock limit, in a bucket of its own)."""
        await self._hit_open(self._locks, "row-presence", str(user_id), "too many presence reports")

    @property
    def limits_ips(self) -> bool:
        return bool(self._ip)

    async def hit_ip(self, ip: str) -> None:
        """Count one request from ``ip``; ``RateLimited`` when the IP is over the limit."""
        await self._hit_open(self._ip, "ip", ip, "too many requests from your address")

    async def check_login(self, email: str, ip: str) -> None:
        """Refuse (without counting) a login while the account or the IP is exhausted."""
        try:
            for item, ident in self._login_keys(email, ip):
                if not await self._limiter.test(item, "login", ident):
                    raise await self._refusal(item, "login", ident, "too many failed logins")
        except StorageError as exc:
            raise Unavailable("login rate limit storage is unreachable") from exc

    async def login_failed(self, email: str, ip: str) -> None:
        """Count one failed login against both the account and the IP."""
        try:
            for item, ident in self._login_keys(email, ip):
                await self._limiter.hit(item, "login", ident)
        except StorageError as exc:
            raise Unavailable("login rate limit storage is unreachable") from exc

    async def close(self) -> None:
        # Neither storage kind has a public close: stop the memory expiry task,
        # or close the Redis client's connections.
        timer = getattr(self._storage, "timer", None)
        if timer is not None and not timer.done():
            timer.cancel()
        client = getattr(getattr(self._storage, "bridge", None), "storage", None)
        if client is not None and hasattr(client, "aclose"):
            await client.aclose()

    def _login_keys(self, email: str, ip: str) -> list[tuple[RateLimitItem, str]]:
        account = [(item, "account:" + email.strip().casefold()) for item in self._login_account]
        return account + [(item, "ip:" + ip) for item in self._login_ip]

    async def _hit_open(
        self, items: Sequence[RateLimitItem], scope: str, ident: str, message: str
    ) -> None:
        try:
            for item in items:
                # A refused hit is not recorded by a moving window.
                if not await self._limiter.hit(item, scope, ident):
                    raise await self._refusal(item, scope, ident, message)
        except StorageError as exc:
            if not self._storage_down:
                logger.warning("rate limits skipped, storage unreachable: %s", exc)
            self._storage_down = True
            return
        if self._storage_down and items:
            logger.info("rate limits apply again")
            self._storage_down = False

    async def _refusal(
        self, item: RateLimitItem, scope: str, ident: str, message: str
    ) -> RateLimited:
        stats = await self._limiter.get_window_stats(item, scope, ident)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        if self._metrics is not None:
            self._metrics.rate_limited.labels(scope).inc()
        return RateLimited(f"{message}; try again in {retry_after} s", retry_after=retry_after)
