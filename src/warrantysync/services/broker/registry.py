"""Which streams of this process are open, by branch.

A stream is in the registry exactly while its ``Subscription`` is entered
(``async with broker.subscribe(sub)``), so a stream that ends in any way —
closed, cancelled, failed — leaves it.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..metrics import Metrics
from .subscriber import Subscriber

_NOBODY: frozenset[Subscriber] = frozenset()


class Registry:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._branches: dict[int, set[Subscriber]] = {}

    def add(self, sub: Subscriber) -> None:
        self._branches.setdefault(sub.branch_id, set()).add(sub)
        self._metrics.streams_open.inc()

    def discard(self, sub: Subscriber) -> None:
        subscribers = self._branches.get(sub.branch_id)
        if subscribers is None or sub not in subscribers:
            return
        subscribers.discard(sub)
        if not subscribers:
            del self._branches[sub.branch_id]
        self._metrics.streams_open.dec()

    def of(self, branch_id: int) -> set[Subscriber] | frozenset[Subscriber]:
        """The branch's streams (do not change the set; copy it to keep it)."""
        return self._branches.get(branch_id, _NOBODY)

    def branches(self) -> Iterator[tuple[int, tuple[Subscriber, ...]]]:
        """Every branch with streams open here, with a copy of its streams."""
        for branch_id, subscribers in list(self._branches.items()):
            if subscribers:
                yield branch_id, tuple(subscribers)

    def all(self) -> list[Subscriber]:
        return [sub for subscribers in self._branches.values() for sub in subscribers]
