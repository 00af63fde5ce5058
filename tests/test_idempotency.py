"""services/idempotency.py: the guard of one request's Idempotency-Key, on a real database.

The race between two identical requests runs on every supported database
(the unique index is the fence there); the rest on SQLite.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError

from factories import make_user
from warrantysync.errors import IdempotencyKeyReused, ValidationFailed
from warrantysync.services.idempotency import KEY_LIFETIME, Answer, IdempotencyGuard, sweep
from warrantysync.storage.db import Database
from warrantysync.storage.migrate import upgrade
from warrantysync.storage.models import IdempotencyRecord, User, utcnow

DATABASES: list[Any] = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mysql", marks=pytest.mark.mysql),
]
PATH = "/api/cases/7"
BODY = b'{"changes": {"notes": "x"}}'
OK = Answer(200, {"id": 7, "notes": "x", "version": 2})
CONFLICT = Answer(409, {"error": "conflict", "message": "notes: changed by someone else"})


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture(params=DATABASES)
def any_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, migrated database of each supported kind (sync: alembic runs its own loop)."""
    name = f"t_{secrets.token_hex(5)}"
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_server").create_database(name)
    else:
        url = request.getfixturevalue("mariadb_server").create_database(name)
    upgrade(url)
    return url


@pytest.fixture
async def any_db(any_url: str) -> AsyncIterator[Database]:
    database = Database(any_url)
    try:
        yield database
    finally:
        await database.dispose()


async def user(db: Database) -> int:
    return await make_user(db, email=f"{secrets.token_hex(4)}@example.com", name="Idem Potent")


def guard(
    db: Database,
    user_id: int,
    key: str | None = "save-1",
    *,
    method: str = "PATCH",
    path: str = PATH,
    body: bytes = BODY,
) -> IdempotencyGuard:
    return IdempotencyGuard(db, user_id=user_id, key=key, method=method, path=path, body=body)


async def records(db: Database) -> list[tuple[int, str, int]]:
    async with db.read() as session:
        rows = await session.execute(
            select(IdempotencyRecord.user_id, IdempotencyRecord.key, IdempotencyRecord.status_code)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


async def rename(session: Any, user_id: int, name: str) -> None:
    """A change of the request's own, to see that it commits or rolls back with the answer."""
    await session.execute(update(User).where(User.id == user_id).values(name=name))


async def name_of(db: Database, user_id: int) -> str | None:
    async with db.read() as session:
        return await session.scalar(select(User.name).where(User.id == user_id))


# -- the key itself ------------------------------------------------------------------


@pytest.mark.parametrize("key", ["", "k" * 129, "tab\there", "new\nline", "\x00"])
async def test_a_key_that_is_not_1_to_128_printable_characters_is_refused(
    db: Database, key: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        guard(db, 1, key)
    assert refused.value.extra == {"field": "Idempotency-Key", "rule": "idempotency_key"}


async def test_the_longest_key_and_any_printable_characters_are_keys(db: Database) -> None:
    alice = await user(db)
    for key in ("k" * 128, "ключ €/ 1", " "):
        first = guard(db, alice, key)
        async with db.write() as session:
            await first.keep(session, OK)
        assert await guard(db, alice, key).earlier() == OK


async def test_without_a_key_nothing_is_replayed_or_stored(db: Database) -> None:
    alice = await user(db)
    unkeyed = guard(db, alice, None)
    assert await unkeyed.earlier() is None
    async with db.write() as session:
        await unkeyed.keep(session, OK)
    assert await unkeyed.refused(CONFLICT) is None
    assert await records(db) == []


# -- replays and reuse ---------------------------------------------------------------


async def test_a_kept_answer_is_the_next_identical_requests_answer(db: Database) -> None:
    alice = await user(db)
    first = guard(db, alice)
    assert await first.earlier() is None
    async with db.write() as session:
        await rename(session, alice, "Renamed")
        await first.keep(session, OK)
    assert await guard(db, alice).earlier() == OK
    assert await name_of(db, alice) == "Renamed"


async def test_an_answer_kept_in_a_transaction_that_rolls_back_is_forgotten(
    db: Database,
) -> None:
    alice = await user(db)
    with pytest.raises(RuntimeError):
        async with db.write() as session:
            await guard(db, alice).keep(session, OK)
            raise RuntimeError("the change failed after the answer was written")
    assert await guard(db, alice).earlier() is None


@pytest.mark.parametrize(
    "other",
    [
        {"body": b'{"changes": {"notes": "y"}}'},
        {"path": "/api/cases/8"},
        {"method": "POST"},
        # The same bytes split differently between path and body are another request.
        {"path": PATH + "{", "body": BODY[1:]},
    ],
)
async def test_the_key_of_another_request_is_reused(db: Database, other: dict[str, Any]) -> None:
    alice = await user(db)
    async with db.write() as session:
        await guard(db, alice).keep(session, OK)
    with pytest.raises(IdempotencyKeyReused):
        await guard(db, alice, **other).earlier()


async def test_keys_are_per_user(db: Database) -> None:
    alice, bob = await user(db), await user(db)
    async with db.write() as session:
        await guard(db, alice).keep(session, OK)
    assert await guard(db, bob).earlier() is None
    assert await guard(db, bob, body=b"{}").earlier() is None


async def test_an_expired_answer_is_neither_replayed_nor_in_the_way(db: Database) -> None:
    alice = await user(db)
    async with db.write() as session:
        await guard(db, alice).keep(session, OK)
        await session.execute(update(IdempotencyRecord).values(created_at=utcnow() - KEY_LIFETIME))
    # Expired: another request may use the key, and its answer replaces the old one.
    other = guard(db, alice, body=b'{"changes": {"notes": "y"}}')
    assert await other.earlier() is None
    async with db.write() as session:
        await other.keep(session, CONFLICT)
    assert await other.earlier() == CONFLICT
    assert await records(db) == [(alice, "save-1", 409)]


async def test_sweep_deletes_only_expired_answers(db: Database) -> None:
    alice = await user(db)
    for key in ("old", "new"):
        async with db.write() as session:
            await guard(db, alice, key).keep(session, OK)
    async with db.write() as session:
        await session.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.key == "old")
            .values(created_at=utcnow() - KEY_LIFETIME - dt.timedelta(seconds=1))
        )
    assert await sweep(db) == 1
    assert await records(db) == [(alice, "new", 200)]


async def test_sweep_deletes_in_batches_oldest_first(any_db: Database) -> None:
    db = any_db
    alice = await user(db)
    for n in range(8):
        async with db.write() as session:
            await guard(db, alice, f"k{n}").keep(session, OK)
    async with db.write() as session:
        for n in range(7):  # k0 oldest, k7 fresh
            await session.execute(
                update(IdempotencyRecord)
                .where(IdempotencyRecord.key == f"k{n}")
                .values(created_at=utcnow() - KEY_LIFETIME - dt.timedelta(minutes=10 - n))
            )
    commits: list[int] = []
    event.listen(db.engine.sync_engine, "commit", lambda _conn: commits.append(1))
    assert await sweep(db, batch=3) == 7
    assert len(commits) == 3  # 3 + 3 + the last 1, each batch its own transaction
    assert await records(db) == [(alice, "k7", 200)]
    assert await sweep(db, batch=3) == 0


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422, 423])
async def test_a_refusal_is_remembered(db: Database, status: int) -> None:
    alice = await user(db)
    refusal = Answer(status, {"error": "x", "message": "no"})
    assert await guard(db, alice).refused(refusal) is None
    assert await guard(db, alice).earlier() == refusal


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_a_429_or_5xx_is_not_an_answer_to_the_request(db: Database, status: int) -> None:
    alice = await user(db)
    assert await guard(db, alice).refused(Answer(status, {"error": "x"})) is None
    async with db.write() as session:
        await guard(db, alice).keep(session, Answer(status, {"error": "x"}))
    assert await guard(db, alice).earlier() is None
    assert await records(db) == []


# -- two identical requests at once ------------------------------------------------------


async def test_of_two_identical_writes_the_second_rolls_back_and_gets_the_firsts_answer(
    any_db: Database,
) -> None:
    db = any_db
    alice = await user(db)
    first, second = guard(db, alice), guard(db, alice)
    # Both looked before either committed.
    assert await first.earlier() is None
    assert await second.earlier() is None
    async with db.write() as session:
        await rename(session, alice, "First")
        await first.keep(session, OK)
    with pytest.raises(IntegrityError):
        async with db.write() as session:
            await rename(session, alice, "Second")
            await second.keep(session, Answer(200, {"id": 7, "version": 3}))
    assert await second.twin() == OK
    assert await name_of(db, alice) == "First"


async def test_a_refusal_that_loses_the_race_answers_with_the_winners_answer(
    any_db: Database,
) -> None:
    """The second twin waited for the first one's commit and found ``expected`` stale."""
    db = any_db
    alice = await user(db)
    first, second = guard(db, alice), guard(db, alice)
    assert await second.earlier() is None
    async with db.write() as session:
        await first.keep(session, OK)
    assert await second.refused(CONFLICT) == OK
    assert await guard(db, alice).earlier() == OK


async def test_a_race_lost_to_another_request_under_the_key_is_a_reuse(db: Database) -> None:
    alice = await user(db)
    late = guard(db, alice, body=b'{"changes": {"notes": "y"}}')
    assert await late.earlier() is None
    async with db.write() as session:
        await guard(db, alice).keep(session, OK)
    with pytest.raises(IdempotencyKeyReused):
        await late.refused(CONFLICT)


async def test_no_twin_when_nothing_is_stored_under_the_key(db: Database) -> None:
    """Another unique index failed: the caller re-raises, nothing is made up."""
    alice = await user(db)
    assert await guard(db, alice).twin() is None
