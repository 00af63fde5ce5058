"""Demo data for ``warrantysync demo`` (README, "Quick start").

Two branches, four users and 25 cases per branch, made only in an empty
database. Cases are created and then moved along their workflow through
``CaseService``, exactly as the API does it, so case numbers, versions, the
audit trail (the history panel) and the outbox (stream resume) are all real.
The content is fixed by ``random.Random(42)``; only the purchase dates follow
the calendar, so they are always in the past two years.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import anyio.to_thread
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .services.accounts import hash_password
from .services.cases import Actor, CaseService
from .services.events import Event
from .storage.db import Database
from .storage.models import Branch, Membership, Role, User

PASSWORD = "demo"
CASES_PER_BRANCH = 25
# Seconds for the whole load, one transaction: far more than it needs.
DEMO_TIME_LIMIT = 120.0

BRANCHES = ((1, "Downtown", "America/New_York"), (2, "Airport", "America/Chicago"))
# (name, email, {branch id: role})
USERS = (
    ("Alice Johnson", "alice@example.com", {1: Role.editor, 2: Role.editor}),
    ("Bob Smith", "bob@example.com", {1: Role.editor, 2: Role.editor}),
    ("Carol Diaz", "carol@example.com", {1: Role.viewer}),
    ("Dave Kim", "dave@example.com", {1: Role.manager}),
)
AREA_CODES = {1: ("212", "646", "917", "718"), 2: ("312", "773", "872", "630")}

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Ethan", "Sophia", "Mason", "Isabella", "Lucas",
    "Mia", "Logan", "Amelia", "James", "Harper", "Benjamin", "Evelyn", "Elijah", "Abigail",
    "Daniel", "Priya", "Mateo", "Chloe", "Hiroshi", "Fatima", "Andre", "Grace", "Samuel",
    "Nora", "Diego", "Leah", "Omar", "Hannah", "Wei", "Zoe", "Kwame", "Rosa", "Tomasz",
)  # fmt: skip
LAST_NAMES = (
    "Martinez", "Thompson", "Garcia", "Robinson", "Clark", "Rodriguez", "Lewis", "Walker",
    "Hall", "Allen", "Young", "Hernandez", "King", "Wright", "Lopez", "Hill", "Scott",
    "Green", "Adams", "Baker", "Nguyen", "Patel", "Chen", "O'Brien", "Kowalski", "Okafor",
    "Schmidt", "Rossi", "Murphy", "Sullivan", "Park", "Cohen", "Ali", "Fischer", "Reyes",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.net", "example.org", "mail.example.com")

ALNUM = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
DIGITS = "0123456789"


@dataclass(frozen=True, slots=True)
class Product:
    name: str
    kind: str
    serial: str  # pattern: "A" = letter or digit, "9" = digit, anything else literal


PRODUCTS = (
    Product("iPhone 14 Pro", "phone", "AAAAAAAAAAAA"),
    Product("iPhone 13", "phone", "AAAAAAAAAAAA"),
    Product("Samsung Galaxy S23", "phone", "R5CWAAAAAAA"),
    Product("Google Pixel 7", "phone", "29999AAAA99999"),
    Product("MacBook Air M2", "laptop", "CAAAAAAAAAA"),
    Product("Dell XPS 13", "laptop", "AAAAAAA"),
    Product("Lenovo ThinkPad T14", "laptop", "PFAAAAAA"),
    Product("HP Envy x360", "laptop", "5CD9999AAA"),
    Product("iPad Air (5th gen)", "tablet", "AAAAAAAAAA"),
    Product("Bosch dishwasher SMS6", "dishwasher", "FD 9999 999999"),
    Product("Samsung washer WW90T", "washer", "0A9A5AAA999999A"),
    Product("LG OLED55C2 TV", "tv", "999AAAA99999"),
    Product("Sony WH-1000XM5", "headphones", "9999999"),
    Product("AirPods Pro (2nd gen)", "headphones", "AAAAAAAAAA"),
    Product("Dyson V15 Detect", "vacuum", "AA9-US-AAA9999A"),
    Product("Nintendo Switch OLED", "console", "XTW99999999999"),
    Product("De'Longhi Magnifica S", "coffee", "99999999999999"),
    Product("KitchenAid mixer KSM150", "mixer", "W99999999"),
    Product("Canon EOS R6", "camera", "999999999999"),
    Product("Garmin Forerunner 255", "watch", "9999999999"),
)

ISSUES: dict[str, tuple[str, ...]] = {
    "phone": (
        "Screen flickers and goes black after a few minutes of use.",
        "Battery drains from 100% to 20% in about four hours with light use.",
        "Face unlock stopped working after the latest software update.",
        "Charging port is loose; the phone only charges with the cable held at an angle.",
        "Rear camera shows a blurry purple spot in every photo.",
    ),
    "laptop": (
        "Keys E and R are intermittently unresponsive.",
        "Fan runs at full speed all the time and the bottom gets very hot.",
        "Will not power on; the charging light blinks amber three times.",
        "Left hinge cracked, the display wobbles when typing.",
        "Trackpad clicks on its own and the cursor jumps.",
    ),
    "tablet": (
        "Touchscreen does not respond along the right edge.",
        "Stuck on the boot logo after an update.",
    ),
    "dishwasher": (
        "Shows error E15 and will not start a programme.",
        "Leaves standing water at the bottom after every cycle.",
        "Door seal leaks onto the kitchen floor during the wash cycle.",
    ),
    "washer": (
        "Loud banging during the spin cycle, even with small loads.",
        "Door stays locked after the programme finishes.",
    ),
    "tv": (
        "Vertical line of dead pixels on the left third of the screen.",
        "Turns itself off after about ten minutes; standby light blinks twice.",
    ),
    "headphones": (
        "Left side cuts out; noise cancelling crackles.",
        "Will not charge; the case light stays off.",
    ),
    "vacuum": (
        "Pulses on and off while cleaning, even with a full charge.",
        "Battery lasts only five minutes.",
    ),
    "console": (
        "Left Joy-Con drifts upward without being touched.",
        "Does not detect game cards.",
    ),
    "coffee": (
        "Grinder runs but no coffee comes out; shows the descaling light.",
        "Leaks water under the machine while brewing.",
    ),
    "mixer": ("Speed control stuck on 6; motor smells hot.",),
    "camera": (
        "Shutter error 70 after a few shots.",
        "Autofocus hunts constantly in good light.",
    ),
    "watch": (
        "GPS never gets a fix outdoors.",
        "Screen fogs up from the inside after a run in the rain.",
    ),
}

# The normal path of a repair; "rejected" branches off after diagnosis.
WORKFLOW = ("new", "diagnosing", "awaiting_parts", "in_repair", "ready", "closed")
STATUS_WEIGHTS = {
    "new": 6,
    "diagnosing": 5,
    "awaiting_parts": 4,
    "in_repair": 4,
    "ready": 3,
    "closed": 2,
    "rejected": 1,
}
PRIORITY_WEIGHTS = {"low": 3, "normal": 10, "high": 5, "urgent": 2}
STEP_NOTES = {
    "diagnosing": "Reproduced the fault on the bench.",
    "awaiting_parts": "Replacement part ordered from the manufacturer, ETA 5 business days.",
    "in_repair": "Part arrived, repair in progress.",
    "ready": "Repaired and tested. Customer notified by phone.",
    "closed": "Picked up by the customer.",
    "rejected": "Damage not covered by the warranty. Customer informed, device ready to collect.",
}


async def _no_publish(_event: Event) -> None:
    """Nothing listens while the CLI runs; streams replay the outbox on connect."""


async def load_demo(db: Database) -> list[tuple[str, str, str]] | None:
    """Create the demo data in an empty database and return the logins.

    Returns ``(email, password, role summary)`` per user, or ``None`` when the
    database already has users or branches (so a second run changes nothing).
    Everything is one transaction: a run that fails midway (a full disk, a
    lost connection) leaves the database empty, so the next run starts over.
    """
    async with db.read() as session:
        if not await _is_empty(session):
            return None
    # One hash per user: a shared hash would tell a reader they share a password.
    hashes = [await anyio.to_thread.run_sync(hash_password, PASSWORD) for _ in USERS]
    try:
        async with db.one_transaction(time_limit=DEMO_TIME_LIMIT) as tx, tx.write() as session:
            if not await _is_empty(session):  # checked again inside the write lock
                return None
            ids = await _people(tx.dialect, session, hashes)
            await _cases(tx, ids)
    except IntegrityError:  # another `demo` run got there first
        return None
    branch_names = {branch_id: name for branch_id, name, _tz in BRANCHES}
    return [(email, PASSWORD, _role_summary(roles, branch_names)) for _n, email, roles in USERS]


async def _people(dialect: str, session: AsyncSession, hashes: list[str]) -> dict[str, int]:
    """The branches, users and memberships; returns each user's id by email."""
    for branch_id, name, timezone in BRANCHES:
        session.add(Branch(id=branch_id, name=name, timezone=timezone, last_event_id=0))
    rows = [
        User(email=email, name=name, password_hash=password_hash, is_active=True)
        for (name, email, _roles), password_hash in zip(USERS, hashes, strict=True)
    ]
    session.add_all(rows)
    await session.flush()
    for user, (_name, _email, roles) in zip(rows, USERS, strict=True):
        for branch_id, role in roles.items():
            session.add(Membership(user_id=user.id, branch_id=branch_id, role=role))
    if dialect == "postgresql":
        # Explicit ids do not move a SERIAL's sequence; the next
        # `branches create` would collide with id 1 otherwise.
        await session.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('branches', 'id'),"
                " (SELECT MAX(id) FROM branches))"
            )
        )
    await session.flush()
    return {user.email: user.id for user in rows}


async def _cases(db: Database, ids: dict[str, int]) -> None:
    cases = CaseService(db, publish=_no_publish, replay_window=10000)
    rng = random.Random(42)
    for branch_id, _name, timezone in BRANCHES:
        staff = [
            Actor(ids[email], name)
            for name, email, roles in USERS
            if roles.get(branch_id) in (Role.editor, Role.manager)
        ]
        today = dt.datetime.now(ZoneInfo(timezone)).date()
        for _ in range(CASES_PER_BRANCH):
            await _make_case(cases, rng, branch_id=branch_id, staff=staff, today=today)


async def _is_empty(session: AsyncSession) -> bool:
    users = await session.scalar(select(func.count()).select_from(User))
    branches = await session.scalar(select(func.count()).select_from(Branch))
    return not users and not branches


def _role_summary(roles: dict[int, Role], branch_names: dict[int, str]) -> str:
    by_role: dict[Role, list[str]] = {}
    for branch_id, role in roles.items():
        by_role.setdefault(role, []).append(branch_names[branch_id])
    return "; ".join(f"{role.value} of {', '.join(names)}" for role, names in by_role.items())


async def _make_case(
    cases: CaseService,
    rng: random.Random,
    *,
    branch_id: int,
    staff: list[Actor],
    today: dt.date,
) -> None:
    first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
    product = rng.choice(PRODUCTS)
    phone = f"({rng.choice(AREA_CODES[branch_id])}) 555-01{rng.randrange(100):02d}"
    email = ""
    if rng.random() < 0.85:
        local = f"{first}.{last}".lower().replace("'", "")
        email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    target = rng.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
    values: dict[str, Any] = {
        "customer_name": f"{first} {last}",
        "customer_phone": phone,
        "customer_email": email,
        "product": product.name,
        "serial_number": _serial(rng, product.serial),
        "purchase_date": (today - dt.timedelta(days=rng.randint(3, 730))).isoformat(),
        "issue": rng.choice(ISSUES[product.kind]),
        "status": "new",
        "priority": rng.choices(list(PRIORITY_WEIGHTS), weights=list(PRIORITY_WEIGHTS.values()))[0],
    }
    # Most new cases are still waiting for someone to pick them up.
    assignee = rng.choice(staff) if target != "new" or rng.random() < 0.3 else None
    if assignee is not None:
        values["assignee_id"] = assignee.id
    created = await cases.create(branch_id=branch_id, values=values, actor=rng.choice(staff))

    notes: list[str] = []
    for step in _path_to(target):
        notes.append(STEP_NOTES[step])
        await cases.patch(
            case_id=created["id"],
            changes={"status": step, "notes": "\n".join(notes)},
            expected={},
            actor=assignee or rng.choice(staff),
        )


def _path_to(target: str) -> tuple[str, ...]:
    if target == "rejected":
        return ("diagnosing", "rejected")
    return WORKFLOW[1 : WORKFLOW.index(target) + 1]


def _serial(rng: random.Random, pattern: str) -> str:
    chars = {"A": ALNUM, "9": DIGITS}
    return "".join(rng.choice(chars[c]) if c in chars else c for c in pattern)


__all__ = ["PASSWORD", "load_demo"]
