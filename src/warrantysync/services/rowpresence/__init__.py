"""Row presence: which case each tab has open, for avatars on rows and in the panel.

The second kind of presence, beside the stream presence that counts who
has the branch open (``services/presence``). Each tab reports, debounced,
its *spot*: the case it has open or focused, the field it edits (if any),
whether it edits there (holds a lock or has unsaved changes) and whether it
has been idle. Spots are ephemeral (never in the outbox), keyed by (user,
tab client id), kept ``SPOT_TTL`` seconds unless reported again, and
dropped when the tab's client leaves the branch (the disconnect grace).

Everyone sees people, not tabs: ``rows`` merges one user's tabs per case
into one entry whose ``state`` is ``editing`` if any tab edits there,
``viewing`` if any tab there is not idle, else ``idle``. Every change goes
out as ``row-presence`` with the branch's complete list, as ``presence``
does for viewers; ``ready``, ``state`` and the snapshot carry it too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from ...errors import Unavailable
from ..backends import by_scheme
from ..events import ROW_PRESENCE
from ..presence import Publish
from ..tabs import is_tab_of
from .base import RowPresenceBackend, Spot
from .memory import MemoryRowPresenceBackend

__all__ = ["RowPresence", "RowPresenceBackend", "Spot", "make_row_presence_backend", "merge"]

logger = logging.getLogger(__name__)

SPOT_TTL = 90.0  # the bundled page reports at least every 30 s


def make_row_presence_backend(url: str | None) -> RowPresenceBackend:
    return by_scheme(
        url, package=__name__, memory=MemoryRowPresenceBackend, redis="RedisRowPresenceBackend"
    )


def merge(spots: list[Spot]) -> list[dict[str, Any]]:
    """One entry per (case, user), sorted by case then name; see the module docstring."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    rank = {"idle": 0, "viewing": 1, "editing": 2}
    for spot in spots:
        state = "editing" if spot.editing else "idle" if spot.idle else "viewing"
        key = (spot.case_id, spot.user_id)
        entry = merged.get(key)
        if entry is None or rank[state] > rank[entry["state"]]:
            field = spot.field if state == "editing" else None
            merged[key] = {
                "case_id": spot.case_id,
                "user": {"id": spot.user_id, "name": spot.name},
                "state": state,
                "field": field,
            }
    return sorted(
        merged.values(), key=lambda e: (e["case_id"], e["user"]["name"].casefold(), e["user"]["id"])
    )


class RowPresence:
    def __init__(
        self,
        backend: RowPresenceBackend,
        *,
        publish: Publish,
        ttl: float = SPOT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.ttl = ttl
        self._publish = publish
        self._clock = clock

    async def report(
        self, *, branch_id: int, spot: Spot | None, user_id: int, client_id: str
    ) -> None:
        """Store the tab's spot (None: it has no case open) and announce a change."""
        if spot is None:
            changed = await self.backend.remove(
                branch_id=branch_id, user_id=user_id, client_id=client_id
            )
        else:
            changed = await self.backend.put(
                branch_id=branch_id, spot=spot, expires_at=self._clock() + self.ttl
            )
        if changed:
            await self._announce(branch_id)

    async def forget_client(self, *, branch_id: int, user_id: int, client_id: str) -> None:
        """The tab's client left the branch for good: its spot goes."""
        if await self.backend.remove(branch_id=branch_id, user_id=user_id, client_id=client_id):
            await self._announce(branch_id)

    async def forget_connection(self, *, branch_id: int, user_id: int, connection_id: str) -> None:
        """A browser's stream left for good: the spots of every tab under it go.

        Tabs sharing one stream report as ``<connection>.<tab>``
        (docs/protocol.md, "Tabs sharing one stream").
        """
        changed = False
        for spot in await self.backend.spots(branch_id=branch_id, now=self._clock()):
            if spot.user_id == user_id and is_tab_of(spot.client_id, connection_id):
                changed |= await self.backend.remove(
                    branch_id=branch_id, user_id=user_id, client_id=spot.client_id
                )
        if changed:
            await self._announce(branch_id)

    async def rows(self, *, branch_id: int) -> list[dict[str, Any]]:
        return merge(await self.backend.spots(branch_id=branch_id, now=self._clock()))

    async def close(self) -> None:
        await self.backend.close()

    async def _announce(self, branch_id: int) -> None:
        try:
            rows = await self.rows(branch_id=branch_id)
            await self._publish(branch_id, ROW_PRESENCE, {"rows": rows})
        except Unavailable:
            pass  # live_state says so; the next report announces the truth
        except Exception:
            logger.exception("could not publish row presence to branch %s", branch_id)
