"""In-process fan-out: one process, nothing to lose between publish and delivery."""

from __future__ import annotations

from ..events import Event
from .base import OnEvent, OnLost, OnResubscribe


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
        if self._on_event is not None:
            self._on_event(event)

    async def healthy(self) -> bool:
        return True
