"""Broker: ordered exactly-once delivery, gap repair, fan-out isolated per stream, subscriptions.

Replay and its admission are in test_replay.py, a stream's whole life in
test_streams.py; the backends' shared contract in test_backends_contract.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest

from conftest import login
from factories import World, commit_events, queued_ids, subscriber
from warrantysync.container import Services
from warrantysync.services.broker import heartbeat as heartbeat_module
from warrantysync.services.broker import make_broker_backend
from warrantysync.services.broker import ordering as ordering_module
from warrantysync.services.broker.memory import MemoryBrokerBackend
from warrantysync.services.broker.subscriber import Subscriber


@contextlib.asynccontextmanager
async def subscribed(services: Services, *subs: Subscriber) -> AsyncIterator[None]:
    async with contextlib.AsyncExitStack() as stack:
        for sub in subs:
            await stack.enter_async_context(services.broker.subscribe(sub))
        yield


async def test_out_of_order_events_are_delivered_in_id_order(
    services: Services, world: World
) -> None:
    branch = world.branches["downtown"]
    broker = services.broker
    sub = subscriber(branch)
    async with broker.subscribe(sub):
        first, second, third = await commit_events(services.db, branch, 3)
        await broker.publish(third)
        await broker.publish(first)
        await broker.publish(second)
        await broker.publish(second)  # a duplicate is dropped
        assert queued_ids(sub) == [first.event_id, second.event_id, third.event_id]


async def test_a_missing_event_is_read_back_from_the_outbox(
    services: Services, world: World
) -> None:
    branch = world.branches["downtown"]
    broker = services.broker
    sub = subscriber(branch)
    async with broker.subscribe(sub):
        lost, also_lost, arrives = await commit_events(services.db, branch, 3)
        await broker.publish(arrives)  # the first two never reach this node
        assert queued_ids(sub) == []
        for _ in range(40):
            await asyncio.sleep(0.05)
            if not broker.ordering.pending(branch):
                break
        assert queued_ids(sub) == [lost.event_id, also_lost.event_id, arrives.event_id]


async def test_stopping_waits_for_a_gap_being_read_to_end(
    services: Services, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gap read still running when the broker stops must end before ``stop()`` returns.

    Otherwise the lifespan disposes of the engine, and the event loop may close,
    while that read still holds a connection whose driver thread then calls back
    into a closed loop; the next use of such a connection never answers.
    """
    branch = world.branches["downtown"]
    broker = services.broker
    reading = asyncio.Event()

    async def slow_events_after(*args: object, **kwargs: object) -> list[object]:
        reading.set()
        await asyncio.sleep(3600)
        return []

    monkeypatch.setattr(ordering_module.outbox, "events_after", slow_events_after)
    await broker.ordering.know_head(branch)
    _lost, arrives = await commit_events(services.db, branch, 2)
    await broker.publish(arrives)
    await asyncio.wait_for(reading.wait(), 5)
    gap_reads = [t for t in asyncio.all_tasks() if t.get_name().startswith("broker-gap-")]
    assert gap_reads
    await broker.stop()
    assert all(task.done() for task in gap_reads)


async def test_heartbeats_go_out_in_slices_with_the_loop_free_between(
    services: Services, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeat_module, "HEARTBEAT_SLICE", 2)
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    subs = [subscriber(downtown, f"d{n}") for n in range(5)] + [subscriber(airport, "a0")]
    async with subscribed(services, *subs):
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


async def test_each_event_is_encoded_once_for_every_subscriber(
    services: Services, world: World
) -> None:
    branch = world.branches["downtown"]
    subs = [subscriber(branch, f"c{n}") for n in range(3)]
    async with subscribed(services, *subs):
        (event,) = await commit_events(services.db, branch, 1)
        await services.broker.publish(event)
        await services.broker.heartbeat()
        frames = [[frame for _id, frame in sub.drain()] for sub in subs]
    assert all(len(f) == 2 for f in frames)
    assert frames[0][0] is frames[1][0] is frames[2][0]  # the same bytes object
    assert frames[0][1] is frames[1][1] is frames[2][1]
    assert frames[0][1].startswith(b"event: heartbeat\n")


async def test_a_full_subscriber_is_closed_not_grown(services: Services, world: World) -> None:
    branch = world.branches["downtown"]
    slow, fast = subscriber(branch, "slow", max_frames=4), subscriber(branch, "fast")
    async with subscribed(services, slow, fast):
        for event in await commit_events(services.db, branch, 10):
            await services.broker.publish(event)
        assert slow.close_reason == "slow"
        assert slow.drain() == []
        assert len(queued_ids(fast)) == 10


async def test_a_subscriber_whose_writer_raises_is_closed_alone(
    client: httpx.AsyncClient, services: Services, world: World
) -> None:
    """A committed PATCH answers 200 and the rest of the branch gets its event."""
    branch, case = world.branches["downtown"], world.cases["phone"]

    def broken(chunk: bytes) -> bool:
        # What uvloop raises for a write to a transport that closed under us.
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")

    before, failing = subscriber(branch, "before"), subscriber(branch, "failing")
    after = subscriber(branch, "after")
    async with subscribed(services, before, failing, after):
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
        assert all(len(queued_ids(sub)) == 1 for sub in (before, after))


async def test_a_goodbye_that_fails_for_one_stream_still_reaches_the_rest(
    services: Services, world: World
) -> None:
    branch = world.branches["downtown"]
    subs = [subscriber(branch, f"c{n}") for n in range(3)]

    def broken() -> None:
        raise RuntimeError("the stream's task is gone")

    async with subscribed(services, *subs):
        subs[1].poke = broken
        assert services.broker.begin_shutdown() == 3
        assert all(sub.closed for sub in subs)
        assert [sub.final_frame is not None for sub in subs] == [True, True, True]


async def test_a_subscription_ends_when_its_block_does_even_if_it_raises(
    services: Services, world: World
) -> None:
    """As broadcaster's test_unsubscribe_w_exception: the body raises, cleanup happens."""
    branch = world.branches["downtown"]
    sub = subscriber(branch)
    with pytest.raises(RuntimeError, match="the body failed"):
        async with services.broker.subscribe(sub) as entered:
            assert entered is sub and services.broker.subscribers() == [sub]
            raise RuntimeError("the body failed")
    assert services.broker.subscribers() == []
    assert _streams_open(services) == 0


async def test_a_subscription_ends_when_its_task_is_cancelled(
    services: Services, world: World
) -> None:
    sub = subscriber(world.branches["downtown"])
    inside = asyncio.Event()

    async def stream() -> None:
        async with services.broker.subscribe(sub):
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stream())
    await inside.wait()
    assert services.broker.subscribers() == [sub]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert services.broker.subscribers() == []
    assert _streams_open(services) == 0


def _streams_open(services: Services) -> float:
    value = services.metrics.registry.get_sample_value("warrantysync_streams_open")
    assert value is not None
    return value


def test_an_unknown_broker_scheme_is_named() -> None:
    assert isinstance(make_broker_backend(None), MemoryBrokerBackend)
    with pytest.raises(ValueError, match="'kafka'"):
        make_broker_backend("kafka://queue:9092")
