"""Small factories for test data, built through the real services."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from warrantysync.services.accounts import hash_password
from warrantysync.services.broker.subscriber import Subscriber
from warrantysync.services.cases import Actor, CaseService
from warrantysync.services.events import CASE_UPDATED, Event
from warrantysync.storage import outbox
from warrantysync.storage.db import Database
from warrantysync.storage.models import Branch, Membership, Role, User

PASSWORD = "pw-secret"
_HASH: list[str] = []


def _password_hash() -> str:
    # argon2 is slow on purpose; one hash serves every factory user.
    if not _HASH:
        _HASH.append(hash_password(PASSWORD))
    return _HASH[0]


@dataclass
class World:
    """Two branches; users with every role; a few cases."""

    users: dict[str, int] = field(default_factory=dict)
    branches: dict[str, int] = field(default_factory=dict)
    cases: dict[str, int] = field(default_factory=dict)


async def make_user(db: Database, *, email: str, name: str, active: bool = True) -> int:
    async with db.write() as session:
        user = User(email=email, name=name, password_hash=_password_hash(), is_active=active)
        session.add(user)
        await session.flush()
        return user.id


async def make_branch(db: Database, *, name: str, timezone: str = "UTC") -> int:
    async with db.write() as session:
        branch = Branch(name=name, timezone=timezone, last_event_id=0)
        session.add(branch)
        await session.flush()
        return branch.id


async def add_member(db: Database, *, user_id: int, branch_id: int, role: Role) -> None:
    async with db.write() as session:
        session.add(Membership(user_id=user_id, branch_id=branch_id, role=role))


async def make_case(db: Database, *, branch_id: int, by: int, **values: object) -> int:
    cases = CaseService(db, publish=_ignore, replay_window=10000)
    values.setdefault("customer_name", "Test Customer")
    created = await cases.create(branch_id=branch_id, values=values, actor=Actor(by, "factory"))
    return int(created["id"])


async def _ignore(_event: object) -> None:
    return None


async def seed_world(db: Database) -> World:
    world = World()
    world.branches["downtown"] = await make_branch(db, name="Downtown")
    world.branches["airport"] = await make_branch(db, name="Airport")
    people = {
        "alice": (
            "alice@example.com",
            "Alice Johnson",
            {"downtown": Role.editor, "airport": Role.editor},
        ),
        "bob": ("bob@example.com", "Bob Smith", {"downtown": Role.editor}),
        "carol": ("carol@example.com", "Carol Diaz", {"downtown": Role.viewer}),
        "dave": ("dave@example.com", "Dave Kim", {"downtown": Role.manager}),
        "erin": ("erin@example.com", "Erin Stone", {"airport": Role.editor}),
    }
    for key, (email, name, roles) in people.items():
        world.users[key] = await make_user(db, email=email, name=name)
        for branch, role in roles.items():
            await add_member(
                db, user_id=world.users[key], branch_id=world.branches[branch], role=role
            )
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    world.cases["phone"] = await make_case(
        db,
        branch_id=downtown,
        by=world.users["dave"],
        customer_name="John Smith",
        product="iPhone 14",
    )
    world.cases["laptop"] = await make_case(
        db, branch_id=downtown, by=world.users["dave"], customer_name="Mia Wong", product="XPS 13"
    )
    world.cases["airport"] = await make_case(
        db, branch_id=airport, by=world.users["erin"], customer_name="Ola Berg", product="Kettle"
    )
    return world


def seeded(url: str) -> World:
    """Seed the migrated database at ``url`` (call outside any event loop)."""

    async def seed() -> World:
        db = Database(url)
        try:
            return await seed_world(db)
        finally:
            await db.dispose()

    return asyncio.run(seed())


def subscriber(
    branch_id: int, client_id: str = "c", *, user_id: int = 1, max_frames: int = 512
) -> Subscriber:
    """A stream's mailbox, as the broker sees it, without a connection behind it."""
    return Subscriber(
        branch_id=branch_id,
        user_id=user_id,
        client_id=client_id,
        principal_key=("session", user_id),
        max_frames=max_frames,
    )


def queued_ids(sub: Subscriber) -> list[int]:
    """The ids of the durable events queued for ``sub`` (and takes everything queued)."""
    return [event_id for event_id, _frame in sub.drain() if event_id is not None]


async def commit_events(db: Database, branch_id: int, count: int) -> list[Event]:
    """Commit ``count`` outbox events without publishing them."""
    events = []
    for n in range(count):
        async with db.write() as session:
            data = f'{{"case_id":1,"changes":{{"notes":"{n}"}}}}'
            event_id = await outbox.append_event(
                session, branch_id=branch_id, kind=CASE_UPDATED, data=data
            )
        events.append(Event(branch_id, CASE_UPDATED, data.encode(), event_id))
    return events
