"""Tabs under one browser connection (docs/protocol.md, "Tabs sharing one stream").

A client id is either a plain connection id (one tab, one stream: the
original clients) or ``<connection_id>.<tab_id>``: a tab of a browser whose
tabs share one stream opened with ``client_id=<connection_id>``. That stream
counts every tab under it as attending, and when it is gone for good the
locks of all those tabs go with it.
"""

from __future__ import annotations

from .locks import LockManager

TAB_SEPARATOR = "."


def connection_of(client_id: str) -> str:
    """The id of the stream that carries ``client_id``: the part before the first ``.``."""
    return client_id.split(TAB_SEPARATOR, 1)[0]


def is_tab_of(client_id: str, connection_id: str) -> bool:
    return client_id == connection_id or client_id.startswith(connection_id + TAB_SEPARATOR)


async def release_connection(
    locks: LockManager, *, branch_id: int, user_id: int, connection_id: str, reason: str
) -> int:
    """Release the locks of ``connection_id`` and of every tab under it; returns how many."""
    owners = {connection_id}
    if TAB_SEPARATOR not in connection_id:
        for lock in await locks.snapshot(branch_id=branch_id):
            client_id = lock.get("client_id")
            user = lock.get("user") or {}
            if (
                user.get("id") == user_id
                and isinstance(client_id, str)
                and is_tab_of(client_id, connection_id)
            ):
                owners.add(client_id)
    released = 0
    for client_id in sorted(owners):
        released += await locks.release_client(
            branch_id=branch_id, user_id=user_id, client_id=client_id, reason=reason
        )
    return released
