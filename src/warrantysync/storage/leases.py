"""Leases: a periodic job that one node of a deployment runs at a time.

A lease is one row per job (``leases``). Claiming it is a single
conditional UPDATE — "mine if it has lapsed or is already mine" — so when
several nodes race, the database lets exactly one of them through; the row
is created by whoever comes first (a second creator's INSERT fails on the
primary key and loses). Times are each node's own clock: a lease lasts a
period far longer than any sane clock skew.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, or_, update
from sqlalchemy.exc import IntegrityError

from .db import Database
from .models import Lease, table

LEASES = table(Lease)


async def claim(
    db: Database, *, name: str, holder: str, until: dt.datetime, now: dt.datetime
) -> bool:
    """Take or extend lease ``name`` for ``holder`` until ``until``; False: another node has it."""
    async with db.write() as session:
        taken = await session.execute(
            update(LEASES)
            .where(
                LEASES.c.name == name,
                or_(LEASES.c.expires_at <= now, LEASES.c.holder == holder),
            )
            .values(holder=holder, expires_at=until)
        )
        if int(getattr(taken, "rowcount", 0) or 0) == 1:
            return True
    try:
        async with db.write() as session:
            await session.execute(insert(LEASES).values(name=name, holder=holder, expires_at=until))
    except IntegrityError:
        return False  # the row exists and is someone else's (or was created just now)
    return True
