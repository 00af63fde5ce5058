"""Broker: ordered exactly-once delivery, gap repair from the outbox, replay."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import login
from factories import World, seed_world
from warrantysync.container import Services
from warrantysync.services import broker as broker_module
from warrantysync.services.accounts import Principal
from warrantysync.services.broker import Broker
from warrantysync.services.broker.memory import MemoryBrokerBackend
from warrantysync.services.broker.subscriber import Subscriber
from warrantysync.services.cases import Actor
from warrantysync.services.events import CASE_UPDATED, Event
from warrantysync.services.metrics import Metrics
from warrantysync.services.streams import Stream, StreamConfig
from warrantysync.storage import outbox
from warrantysync.storage.db import Database


def _sub(branch_id: int, client_id: str = "c", max_frames: int = 512) -> Subscriber:
    return Subscriber(
        branch_id=branch_id,
        user_id=1,
        client_id=client_id,
        principal_key=("session", 1),
        max_frames=max_frames,
    )


def _ids(sub: Subscriber) -> list[int]:
    return [event_id for event_id, _frame in sub.drain() if event_id is not None]


async def _commit_events(db: Database, branch_id: int, count: int) -> list[Event]:
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


async def test_out_of_order_events_are_delivered_in_id_order(services: Services) -> None:
    world = await seed_world(services.db)
    branch = world.branches["downtown"]
    broker = services.broker
    sub = _sub(branch)
    await broker.subscribe(sub)
    first, second, third = await _commit_events(services.db, branch, 3)
    await broker.publish(third)
    await broker.publish(first)
    await broker.publish(second)
    await broker.publish(second)  # a duplicate is dropped
    assert _ids(sub) == [first.event_id, second.event_id, third.event_id]
    broker.unsubscribe(sub)


async def test_a_missing_event_is_read_back_from_the_outbox(services: Services) -> None:
    world = await seed_world(services.db)
    branch = world.branches["downtown"]
    broker = services.broker
    sub = _sub(branch)
    await broker.subscribe(sub)
    lost, also_lost, arrives = await _commit_events(services.db, branch, 3)
    await broker.publish(arrives)  # the first two never reach this node
    assert _ids(sub) == []
    for _ in range(40):
        await asyncio.sleep(0.05)
        if not broker._branch(branch).pending:
            break
    assert _ids(sub) == [lost.event_id, also_lost.event_id, arrives.event_id]
    broker.unsubscribe(sub)


async def test_heartbeats_go_out_in_slices_with_the_loop_free_between(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_module, "HEARTBEAT_SLICE", 2)
    world = await seed_world(services.db)
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    subs = [_sub(downtown, f"d{n}") for n in range(5)] + [_sub(airport, "a0")]
    for sub in subs:
        await services.broker.subscribe(sub)
    for sub in subs:
        sub.drain()  # the subscribe-time state, if any
    seen: list[int] = []

    async def meanwhile() -> None:
        while len(seen) < 10:
            seen.append(sum(1 for sub in subs if sub.queued))
            await asyncio.sleep(0)

    other = asyncio.create_task(meanwhile())
    assert await services.broker.heartbeat() == 6
    await other
    beats = [[f for _id, f in sub.drain() if f.startswith(b"event: heartbeat")] for sub in subs]
    assert [len(b) for b in beats] == [1] * 6
    # Other work ran while the heartbeats were half out: 2, then 4, then 5 + 1.
    assert {2, 4} <= set(seen)


async def test_each_event_is_encoded_once_for_every_subscriber(services: Services) -> None:
    world = await seed_world(services.db)
    branch = world.branches["downtown"]
    subs = [_sub(branch, f"c{n}") for n in range(3)]
    for sub in subs:
        await services.broker.subscribe(sub)
    (event,) = await _commit_events(services.db, branch, 1)
    await services.broker.publish(event)
    await services.broker.heartbeat()
    frames = [[frame for _id, frame in sub.drain()] for sub in subs]
    assert all(len(f) == 2 for f in frames)
    assert frames[0][0] is frames[1][0] is frames[2][0]  # the same bytes object
    assert frames[0][1] is frames[1][1] is frames[2][1]
    assert frames[0][1].startswith(b"event: heartbeat\n")


async def test_a_full_subscriber_is_closed_not_grown(services: Services) -> None:
    world = await seed_world(services.db)
    branch = world.branches["downtown"]
    slow, fast = _sub(branch, "slow", max_frames=4), _sub(branch, "fast")
    await services.broker.subscribe(slow)
    await services.broker.subscribe(fast)
    for event in await _commit_events(services.db, branch, 10):
        await services.broker.publish(event)
    assert slow.close_reason == "slow"
    assert slow.drain() == []
    assert len(_ids(fast)) == 10


async def test_stream_has_no_gap_or_duplicate_while_commits_race_the_replay(
    services: Services,
) -> None:
    """Resume while 60 changes commit concurrently: every id exactly once, in order."""
    world = await seed_world(services.db)
    branch, case = world.branches["downtown"], world.cases["phone"]
    cases = services.cases
    actor = Actor(world.users["alice"], "Alice", "writer")
    for n in range(5):
        await cases.patch(case_id=case, changes={"notes": f"before {n}"}, expected={}, actor=actor)
    async with services.db.read() as session:
        head_before = await outbox.head(session, branch_id=branch)
    resume = head_before - 3
    stream = Stream(
        broker=services.broker,
        locks=services.locks,
        presence=services.presence,
        config=StreamConfig(heartbeat_ms=1000, lock_ttl_ms=30000, replay_window=10000),
        principal=Principal(world.users["bob"], "Bob", "bob@example.com", session_id=1),
        branch_id=branch,
        client_id="reader",
        resume=str(resume),
    )

    async def write() -> None:
        for n in range(60):
            await cases.patch(
                case_id=case, changes={"notes": f"during {n}"}, expected={}, actor=actor
            )

    writer = asyncio.create_task(write())
    await stream.open()
    seen: list[int] = []
    ready_id = None
    frames = stream.frames()
    final = head_before + 60
    async with asyncio.timeout(20):
        async for chunk in frames:
            for block in chunk.split(b"\n\n"):
                lines = dict(
                    line.split(": ", 1) for line in block.decode().splitlines() if ": " in line
                )
                if lines.get("event") == "ready":
                    ready_id = int(lines["id"])
                elif lines.get("event") == CASE_UPDATED:
                    seen.append(int(lines["id"]))
            if seen and seen[-1] == final:
                break
    await frames.aclose()
    await writer
    await stream.close()
    assert ready_id is not None
    assert seen == list(range(resume + 1, final + 1))


def test_replay_from_any_retained_id_yields_exactly_the_suffix(
    tmp_path: Path, migrated_template: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'replay.db'}"
    shutil.copy(migrated_template, tmp_path / "replay.db")
    count = 40

    async def build() -> tuple[int, int]:
        db = Database(url)
        try:
            world = await seed_world(db)
            branch = world.branches["downtown"]
            await _commit_events(db, branch, count)
            async with db.read() as session:
                return branch, await outbox.head(session, branch_id=branch)
        finally:
            await db.dispose()

    branch, head = asyncio.run(build())

    async def check(ring_size: int, seen_live: int, resume: int) -> None:
        db = Database(url)
        broker = Broker(MemoryBrokerBackend(), db=db, metrics=Metrics(), ring_size=ring_size)
        try:
            await broker.start()
            async with db.read() as session:
                rows = await outbox.events_after(
                    session, branch_id=branch, after=head - seen_live, limit=count
                )
            for row in rows:  # this node saw the newest `seen_live` events live
                await broker.publish(Event(branch, row.kind, row.data.encode(), row.id))
            replayed = await broker.replay_after(branch, resume)
            assert [e.event_id for e in replayed] == list(range(resume + 1, head + 1))
        finally:
            await broker.stop()
            await db.dispose()

    @settings(max_examples=60, deadline=None)
    @given(
        ring_size=st.integers(1, count + 5),
        seen_live=st.integers(1, count),
        resume=st.integers(0, head),
    )
    def property_(ring_size: int, seen_live: int, resume: int) -> None:
        asyncio.run(check(ring_size, seen_live, resume))

    property_()


def test_an_unknown_broker_scheme_is_named() -> None:
    import pytest

    from warrantysync.services.broker import make_broker_backend

    assert isinstance(make_broker_backend(None), MemoryBrokerBackend)
    with pytest.raises(ValueError, match="'kafka'"):
        make_broker_backend("kafka://queue:9092")


async def test_a_subscriber_whose_writer_raises_is_closed_alone(
    client: httpx.AsyncClient, services: Services, world: World
) -> None:
    """A committed PATCH answers 200 and the rest of the branch gets its event."""
    branch, case = world.branches["downtown"], world.cases["phone"]

    def broken(chunk: bytes) -> bool:
        # What uvloop raises for a write to a transport that closed under us.
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    before, failing, after = _sub(branch, "before"), _sub(branch, "failing"), _sub(branch, "after")
    for sub in (before, failing, after):
        await services.broker.subscribe(sub)
    failing.writer = broken
    csrf = await login(client, "alice@example.com")
    response = await client.patch(
        f"/api/cases/{case}", json={"changes": {"notes": "isolated"}}, headers=csrf
    )
    assert response.status_code == 200, response.text
    assert failing.close_reason == "failed" and failing.writer is None
    for sub in (before, after):
        (frame,) = [frame for _id, frame in sub.drain()]
        assert b'"notes":"isolated"' in frame
    # The next event still reaches everyone left.
    response = await client.patch(
        f"/api/cases/{case}", json={"changes": {"notes": "again"}}, headers=csrf
    )
    assert response.status_code == 200
    assert all(len(_ids(sub)) == 1 for sub in (before, after))
