"""``goodbye``: a stream told to go away and come back later, at a jittered time.

Sent to every stream on a graceful shutdown (``begin_shutdown`` from the
server's exit signal; docs/architecture.md, "When things go wrong"), and to
a stream whose replay could not be served in time.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from ...jsonutil import dumps
from ..events import GOODBYE, encode
from . import fanout
from .subscriber import Subscriber

SHUTDOWN_RETRY_MS = (1000, 5000)


def goodbye_frame(reason: str, retry_ms: tuple[int, int]) -> bytes:
    """``goodbye`` with one jittered delay, in its JSON and as the SSE ``retry:`` field.

    A standard EventSource never reads the JSON: without the field it would
    come back after the stream's opening ``retry: 1000``, every client at once.
    """
    jittered = random.randint(*retry_ms)
    frame = encode(GOODBYE, dumps({"reason": reason, "retry_ms": jittered}))
    return b"retry: %d\n" % jittered + frame


def say_goodbye(
    subscribers: Iterable[Subscriber], reason: str, retry_ms: tuple[int, int] = SHUTDOWN_RETRY_MS
) -> int:
    """Close every stream with its own ``goodbye``; returns how many."""
    count = 0
    for sub in subscribers:
        fanout.close(sub, reason, goodbye_frame(reason, retry_ms))
        count += 1
    return count
