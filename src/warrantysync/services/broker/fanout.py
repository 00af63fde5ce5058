"""Delivery of one event to the streams of one branch, each stream on its own.

The event is already bytes (``Event.frame``, and ``Event.chunk`` for a direct
socket write; docs/architecture.md, "Alice changes a customer's name; Bob
sees it", step 6): per stream the loop is one direct write or one queue append
(``subscriber.py``). A stream whose delivery raises is closed alone — the
others still get the event, and the publisher, which may be a PATCH that has
already committed, never sees the exception (docs/protocol.md, "The event
stream": the client reconnects and resumes from its last id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable

from ..events import Event
from .subscriber import Subscriber

log = logging.getLogger(__name__)

FAILED = "failed"  # the close reason of a stream whose delivery raised


def push(subscribers: Iterable[Subscriber], event: Event) -> int:
    """The fan-out loop; returns how many streams took the event by a direct write."""
    frame, event_id, chunk = event.frame, event.event_id, event.chunk
    direct = 0
    for sub in subscribers:
        try:
            writer = sub.writer  # inlined fast path of Subscriber.push
            if writer is not None and writer(chunk):
                direct += 1
            else:
                sub.push(frame, event_id, chunk)
        except Exception:
            cut_off(sub)
    return direct


def push_event(subscribers: Collection[Subscriber], event: Event) -> int:
    """``event`` to every stream; an event with an owner copy sends that to the owner's streams."""
    copy = event.owner_copy
    if copy is None:
        return push(tuple(subscribers), event)
    owner = event.owner
    others = [sub for sub in subscribers if sub.user_id != owner]
    own = [sub for sub in subscribers if sub.user_id == owner]
    return push(others, event) + push(own, copy)


def push_per_user(subscribers: Iterable[Subscriber], event_for: Callable[[int], Event]) -> int:
    """Each user's streams get ``event_for(user_id)``: one encoding per user, not per stream."""
    by_user: dict[int, list[Subscriber]] = {}
    for sub in subscribers:
        by_user.setdefault(sub.user_id, []).append(sub)
    return sum(push(subs, event_for(user_id)) for user_id, subs in by_user.items())


def close(sub: Subscriber, reason: str, final_frame: bytes | None = None) -> None:
    """Close one stream (``final_frame`` written last); a failure is that stream's alone."""
    try:
        sub.close(reason, final_frame)
    except Exception:
        cut_off(sub)


def cut_off(sub: Subscriber) -> None:
    """Close a stream whose delivery raised, and say so in the log."""
    log.exception("delivery to a stream of branch %s failed; closing it", sub.branch_id)
    try:
        sub.close(FAILED)
    except Exception:
        log.exception("closing the failed stream of branch %s raised too", sub.branch_id)
