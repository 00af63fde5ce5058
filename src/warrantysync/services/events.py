"""Events and their wire form.

``encode`` is the one place an event becomes bytes (``text/event-stream``
framing); the broker calls it once per event and writes the same bytes to
every subscriber. Data is always single-line JSON (orjson never emits a
newline), so one ``data:`` line is enough. ``Event.chunk`` is the same frame
already wrapped as one HTTP/1.1 chunk, so a stream written straight to its
socket (``web/fastpath.py``) costs no per-connection encoding either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..jsonutil import dumps

# Durable events: written to the outbox, carry an id, replayed on resume.
CASE_CREATED = "case-created"
CASE_UPDATED = "case-updated"
CASE_DELETED = "case-deleted"
DURABLE = frozenset({CASE_CREATED, CASE_UPDATED, CASE_DELETED})

# Ephemeral events: no id, never replayed; `ready` and `state` carry the truth.
READY = "ready"
LOCK_ACQUIRED = "lock-acquired"
LOCK_RELEASED = "lock-released"
LOCK_RENEWED = "lock-renewed"
LOCK_REQUESTED = "lock-requested"
LOCK_REQUEST_ANSWERED = "lock-request-answered"
ROW_PRESENCE = "row-presence"
STATE = "state"
PRESENCE = "presence"
HEARTBEAT = "heartbeat"
SYNC_REQUIRED = "sync-required"
GOODBYE = "goodbye"


def encode(kind: str, data: bytes, event_id: int | None = None) -> bytes:
    """Frame one event. ``data`` is already-serialised JSON."""
    if event_id is None:
        return b"event: " + kind.encode() + b"\ndata: " + data + b"\n\n"
    return (
        b"id: "
        + str(event_id).encode()
        + b"\nevent: "
        + kind.encode()
        + b"\ndata: "
        + data
        + b"\n\n"
    )


def chunked(frame: bytes) -> bytes:
    """``frame`` as one chunk of a ``Transfer-Encoding: chunked`` body."""
    return b"%x\r\n%b\r\n" % (len(frame), frame)


def retry_frame(ms: int) -> bytes:
    return b"retry: " + str(ms).encode() + b"\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    """An event on its way to subscribers; ``frame`` and ``chunk`` are computed once.

    An ephemeral event may come in two copies: ``owner_copy`` goes to the
    streams of user ``owner``, this one to everyone else (a lock event
    shows its client id only to the lock's own user). Still encoded once
    per copy, never per subscriber.
    """

    branch_id: int
    kind: str
    data: bytes
    event_id: int | None = None
    owner: int | None = None
    owner_copy: Event | None = field(default=None, repr=False, compare=False)
    frame: bytes = field(init=False, repr=False, compare=False)
    chunk: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if (self.owner is None) != (self.owner_copy is None) or (
            self.owner is not None and self.event_id is not None
        ):
            raise ValueError("an owner copy needs an owner, and only ephemeral events have one")
        frame = encode(self.kind, self.data, self.event_id)
        object.__setattr__(self, "frame", frame)
        object.__setattr__(self, "chunk", chunked(frame))

    @classmethod
    def of(
        cls,
        branch_id: int,
        kind: str,
        payload: Any,
        event_id: int | None = None,
        *,
        owner: tuple[int, Any] | None = None,
    ) -> Event:
        """``owner=(user_id, payload)``: that user's streams get this payload instead."""
        if owner is None:
            return cls(branch_id, kind, dumps(payload), event_id)
        user_id, own = owner
        copy = cls(branch_id, kind, dumps(own))
        return cls(branch_id, kind, dumps(payload), event_id, owner=user_id, owner_copy=copy)

    @property
    def durable(self) -> bool:
        return self.event_id is not None
