"""What every Redis backend shares: one way to connect, and one way to fail.

Imported only by the ``redis`` backend modules (and the start-up check), so
Redis stays an optional extra. Commands get short timeouts and one immediate
retry: a pooled connection that died with a Redis restart is replaced on the
retry, while a Redis that is really gone fails within about a second instead
of holding a request for redis-py's default backoff. Callers turn the
connection-level errors into ``errors.Unavailable`` with ``unavailable()``;
the web layer answers those 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..errors import Unavailable

__all__ = [
    "DOWN_ERRORS",
    "KEY_PREFIX",
    "check_reachable",
    "connect",
    "redact",
    "unavailable",
]

KEY_PREFIX = "warrantysync"
CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 2.0

# Redis (or the way to it) is down, restarting, loading its data or read-only
# after a failover: all transient, all "try again shortly". OSError covers the
# builtin TimeoutError that ``asyncio.timeout`` raises.
DOWN_ERRORS: tuple[type[Exception], ...] = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ReadOnlyError,
    rx.TryAgainError,
    rx.ClusterDownError,
    OSError,
)


def connect(url: str, *, retries: int = 1, command_timeout: float = COMMAND_TIMEOUT) -> Redis:
    """A client (with its own pool) for ``url``; nothing is sent until first use."""
    return Redis.from_url(
        url,
        socket_connect_timeout=CONNECT_TIMEOUT,
        socket_timeout=command_timeout,
        socket_keepalive=True,
        retry=Retry(NoBackoff(), retries),
        health_check_interval=0,
    )


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


@contextlib.contextmanager
def unavailable(what: str) -> Iterator[None]:
    """Re-raise Redis connection trouble as ``Unavailable`` naming ``what`` failed."""
    try:
        yield
    except DOWN_ERRORS as exc:
        raise Unavailable(f"{what}: Redis is not reachable right now") from exc


async def check_reachable(url: str, *, within: float = 3.0) -> str | None:
    """None when Redis at ``url`` answers PING, else a one-line reason for the operator."""
    client = connect(url, retries=0)
    try:
        async with asyncio.timeout(within):
            await client.ping()
    except TimeoutError:
        return f"Redis at {redact(url)} did not answer within {within:g} s"
    except rx.AuthenticationError as exc:
        return f"Redis at {redact(url)} refused our credentials: {exc}"
    except DOWN_ERRORS as exc:
        return f"cannot reach Redis at {redact(url)}: {exc}"
    except rx.ResponseError as exc:
        return f"cannot reach Redis at {redact(url)}: {exc}"
    finally:
        await client.aclose()
    return None
