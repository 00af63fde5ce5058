"""In-process fan-out: one process, nothing to lose between publish and delivery."""

from __future__ import annotations

import logging

from ..events import Event
from .base import OnEvent, OnLost, OnResubscribe

log = logging.getLogger(__name__)


class MemoryBrokerBackend:
    def __init__(self) -> None:
        self._on_event: OnEvent | None = None

    async def connect(
        self, on_event: OnEvent, on_resubscribe: OnResubscribe, on_lost: OnLost | None = None
    ) -> None:
        self._on_event = on_event

    async def disconnect(self) -> None:
        self._on_event = None

    async def publish(self, event: Event) -> None:
        if self._on_event is None:
            return
        # The publisher may be a PATCH that already committed: whatever goes
        # wrong in delivery is this node's problem, never the caller's.
        try:
            self._on_event(event)
        except Exception:
            log.exception("delivering %s of branch %s failed", event.kind, event.branch_id)

    async def healthy(self) -> bool:
        return True
