"""What a fan-out backend offers: publish, and a callback for everything published.

A backend carries events between processes and nothing more. Ordering, gap
repair, rings and subscribers live once, in the front class (``Broker``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from ..events import Event

OnEvent = Callable[[Event], None]
OnResubscribe = Callable[[], Awaitable[None]]
OnLost = Callable[[], None]


class BrokerBackend(Protocol):
    async def connect(
        self, on_event: OnEvent, on_resubscribe: OnResubscribe, on_lost: OnLost | None = None
    ) -> None:
        """Start delivering every published event (this node's too) to ``on_event``.

        ``on_lost`` is called once when the backend loses its subscription
        (Redis went away); ``on_resubscribe`` is awaited after it re-established
        it, when events may have been missed.
        """

    async def disconnect(self) -> None: ...

    async def publish(self, event: Event) -> None: ...

    async def healthy(self) -> bool: ...
