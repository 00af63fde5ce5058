"""File descriptors: raise the limit at start, notice when they run short.

Every connection is a descriptor. With the common default soft limit of
1,024, 1,100 idle connections made every new client fail — and nothing was
logged, because the event loop's accept() quietly drops connections it has
no descriptor for. So the server raises its soft limit to the hard limit at
start (``raise_limit``), and :class:`FdWatch`, run once a second by the
server, counts what is open: when fewer than a tenth are left it closes the
connections idle longest (warrantysync/httpguard.py) until a fifth is free
again, so a health probe still gets in, and it logs a warning — at most once
a minute, with the count of the times it kept quiet.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

LOG_EVERY = 60.0
SHORT = 0.10  # "running short": less than this share of the limit is free
TARGET = 0.20  # shed idle connections until this share is free again
_FD_DIRS = ("/proc/self/fd", "/dev/fd")


def raise_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit (macOS) cannot be the soft one; a million can.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("could not raise the file descriptor limit from %d: %s", soft, exc)
        return soft, soft
    log.info("file descriptor limit raised from %d to %d (the hard limit)", soft, target)
    return soft, target


def open_descriptors(limit: int) -> int | None:
    """How many descriptors this process has open, or None where it cannot tell."""
    for path in _FD_DIRS:
        try:
            with os.scandir(path) as entries:
                return sum(1 for _ in entries) - 1  # the directory handle itself
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                return limit  # not even one left to look with
            continue
    return None


class FdWatch:
    """Checks the descriptor count on demand; sheds idle connections when short."""

    def __init__(
        self,
        close_idle: Callable[[Iterable[object], int], int],
        *,
        log_every: float = LOG_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.close_idle = close_idle
        self.log_every = log_every
        self.clock = clock
        self._logged_at: float | None = None
        self._quiet = 0

    def check(self, connections: Iterable[object]) -> int:
        """Shed idle connections if descriptors run short; returns how many were closed."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        used = open_descriptors(limit)
        if used is None or limit == resource.RLIM_INFINITY or limit - used >= limit * SHORT:
            return 0
        conns = list(connections)
        closed = self.close_idle(conns, used - int(limit * (1 - TARGET)))
        now = self.clock()
        if self._logged_at is not None and now - self._logged_at < self.log_every:
            self._quiet += 1
            return closed
        quiet = f"; {self._quiet} more times since the last warning" if self._quiet else ""
        log.warning(
            "file descriptors running short: %d of %d in use, %d connections;"
            " closed %d idle ones, the longest idle first%s",
            used,
            limit,
            len(conns),
            closed,
            quiet,
        )
        self._logged_at, self._quiet = now, 0
        return closed


__all__ = ["FdWatch", "open_descriptors", "raise_limit"]
