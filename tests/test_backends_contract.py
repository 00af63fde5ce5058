"""What "several processes act as one" means, one test body per behaviour and backend.

Each body runs on ``memory://`` (one process: both "nodes" share one
backend) and on a real Redis (each node has its own backend instance, as two
server processes would). The single-backend lock and presence contracts live
in test_locks*.py and test_presence.py, which run over the same backends;
this module adds what only shows with more than one node: races between
nodes, fan-out between Broker fronts, cluster-wide presence, crashed nodes,
and Redis losing its data.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from coordination import Clock, Recorder
from factories import World, seed_world
from relay import Relay
from servers import RedisServer, free_port
from warrantysync.errors import LockBarred, LockConflict, Unavailable
from warrantysync.services.broker import Broker
from warrantysync.services.broker.memory import MemoryBrokerBackend
from warrantysync.services.broker.subscriber import Subscriber
from warrantysync.services.cases import Actor, CaseService
from warrantysync.services.events import Event
from warrantysync.services.locks import (
    LockBackend,
    LockManager,
    MemoryLockBackend,
    Owner,
    locks_seen_by,
)
from warrantysync.services.metrics import Metrics
from warrantysync.services.presence import MemoryPresenceBackend, Presence, PresenceBackend
from warrantysync.storage.db import Database

BACKENDS: list[Any] = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
ALICE = Owner(1, "Alice", "tab-a")


def _redis(request: pytest.FixtureRequest) -> RedisServer:
    server: RedisServer = request.getfixturevalue("redis_server")
    return server


def _prefix() -> str:
    return f"test-{secrets.token_hex(6)}"


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    async def ready() -> bool:
        return check()

    await eventually_async(ready, within)


async def eventually_async(check: Callable[[], Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``check`` until it holds; fail after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within} s")


# --- locks ----------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
async def lock_nodes(request: pytest.FixtureRequest) -> AsyncIterator[list[LockBackend]]:
    """Three nodes' views of one lock store."""
    if request.param == "memory":
        shared = MemoryLockBackend()
        yield [shared, shared, shared]
        await shared.close()
        return
    from warrantysync.services.locks.redis import RedisLockBackend

    url, prefix = _redis(request).url, _prefix()
    nodes: list[LockBackend] = [RedisLockBackend(url, prefix=prefix) for _ in range(3)]
    yield nodes
    for node in nodes:
        await node.close()


async def test_one_of_many_racing_acquirers_wins(lock_nodes: list[LockBackend]) -> None:
    owners = [Owner(user, f"User {user}", f"tab-{user}") for user in range(1, 31)]
    results = await asyncio.gather(
        *(
            lock_nodes[i % 3].acquire(
                case_id=5, branch_id=1, field="notes", owner=o, token=f"t{i}", ttl=10, now=100
            )
            for i, o in enumerate(owners)
        )
    )
    winners = [r for r in results if r.granted]
    assert len(winners) == 1
    assert {r.lock.token for r in results} == {winners[0].lock.token}


async def test_each_expiry_is_claimed_exactly_once_across_nodes(
    lock_nodes: list[LockBackend],
) -> None:
    for case_id in range(40):
        await lock_nodes[case_id % 3].acquire(
            case_id=case_id, branch_id=1, field="notes", owner=ALICE, token=f"t{case_id}",
            ttl=10, now=0,
        )  # fmt: skip
    # Every node sweeps at once, several times, as their timers would.
    rounds = await asyncio.gather(
        *(node.claim_expired(now=10) for _ in range(4) for node in lock_nodes)
    )
    claimed = [lock.token for batch in rounds for lock in batch]
    assert sorted(claimed) == sorted(f"t{i}" for i in range(40))
    assert await lock_nodes[0].for_branch(branch_id=1, now=0) == []


async def test_locks_are_shared_between_nodes(lock_nodes: list[LockBackend]) -> None:
    clock = Clock()
    a = LockManager(lock_nodes[0], ttl=30, publish=Recorder(), clock=clock)
    b = LockManager(lock_nodes[1], ttl=30, publish=Recorder(), clock=clock)
    mine = await a.acquire(case_id=1, branch_id=1, field="notes", owner=ALICE)
    with pytest.raises(LockConflict):
        await b.acquire(case_id=1, branch_id=1, field="notes", owner=Owner(2, "Bob", "tab-b"))
    renewed = await b.acquire(case_id=1, branch_id=1, field="notes", owner=ALICE)
    assert renewed.token == mine.token
    await b.check_write(
        case_id=1, fields=["notes"], user_id=1, client_id="tab-a", tokens={"notes": mine.token}
    )
    released = await b.release_client(branch_id=1, user_id=1, client_id="tab-a")
    assert released == 1
    assert await a.snapshot(branch_id=1) == []


async def test_one_user_racing_on_every_node_gets_exactly_the_cap(
    lock_nodes: list[LockBackend],
) -> None:
    # 30 fields at once from 10 tabs of one user, spread over three nodes.
    results = await asyncio.gather(
        *(
            lock_nodes[i % 3].acquire(
                case_id=1 + i % 4, branch_id=1 + i % 2, field=f"f{i}",
                owner=Owner(1, "Alice", f"tab-{i % 10}"), token=f"t{i}", ttl=10, now=100,
                max_per_user=5,
            )
            for i in range(30)
        )
    )  # fmt: skip
    assert sum(r.granted for r in results) == 5
    assert {r.refusal for r in results if not r.granted} == {"too_many"}
    held = [*await lock_nodes[2].for_branch(branch_id=1, now=100)]
    held += await lock_nodes[2].for_branch(branch_id=2, now=100)
    assert len(held) == 5


async def test_a_forced_release_on_one_node_bars_the_user_on_every_node(
    lock_nodes: list[LockBackend],
) -> None:
    clock = Clock()
    managers = [
        LockManager(node, ttl=30, publish=Recorder(), clock=clock, force_cooldown=60)
        for node in lock_nodes
    ]
    await managers[0].acquire(case_id=1, branch_id=1, field="notes", owner=ALICE)
    await managers[1].release(
        case_id=1, branch_id=1, field="notes", user_id=9, client_id=None, force=True
    )
    with pytest.raises(LockBarred):
        await managers[2].acquire(
            case_id=1, branch_id=1, field="notes", owner=Owner(1, "Alice", "tab-z")
        )
    await managers[2].acquire(case_id=1, branch_id=1, field="notes", owner=Owner(2, "Bob", "b"))


@pytest.mark.redis
async def test_redis_lock_backend_down_is_unavailable() -> None:
    from warrantysync.services.locks.redis import RedisLockBackend

    backend = RedisLockBackend(f"redis://127.0.0.1:{free_port()}/0", prefix=_prefix())
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: backend.acquire(
                case_id=1, branch_id=1, field="notes", owner=ALICE, token="t", ttl=1, now=0
            ),
            lambda: backend.release(case_id=1, field="notes", user_id=1, client_id="tab-a"),
            lambda: backend.get_many(case_id=1, fields=["notes"], now=0),
            lambda: backend.for_branch(branch_id=1, now=0),
            lambda: backend.claim_expired(now=0),
            lambda: backend.release_owner(branch_id=1, user_id=1, client_id="tab-a"),
        ]
        for call in calls:
            with pytest.raises(Unavailable):
                async with asyncio.timeout(5):
                    await call()
    finally:
        await backend.close()


# --- presence -------------------------------------------------------------------


@dataclass
class Node:
    presence: Presence
    backend: PresenceBackend
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.presence.run(self.stop))

    async def crash(self) -> None:
        """Stop renewing without a word to anyone, like a SIGKILL."""
        assert self.task is not None
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Gone:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str]] = []

    async def __call__(self, branch_id: int, user_id: int, client_id: str) -> None:
        self.calls.append((branch_id, user_id, client_id))


@pytest.fixture(params=BACKENDS)
async def presence_nodes(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[list[Node], Recorder, Gone]]:
    """Three Presence fronts; with Redis, three nodes with short leases."""
    published, gone = Recorder(), Gone()
    backends: list[PresenceBackend]
    if request.param == "memory":
        shared = MemoryPresenceBackend()
        backends = [shared, shared, shared]
    else:
        from warrantysync.services.presence.redis import RedisPresenceBackend

        url, prefix = _redis(request).url, _prefix()
        backends = [
            RedisPresenceBackend(url, prefix=prefix, lease_ttl=0.6, maintain_every=0.1)
            for _ in range(3)
        ]
    nodes = [
        Node(Presence(b, publish=published, grace=0.2, on_client_gone=gone), b) for b in backends
    ]
    for node in nodes:
        node.start()
    yield nodes, published, gone
    for node in nodes:
        node.stop.set()
        if node.task is not None:
            await asyncio.gather(node.task, return_exceptions=True)
        await node.presence.close()


async def test_presence_is_cluster_wide(
    presence_nodes: tuple[list[Node], Recorder, Gone],
) -> None:
    (a, b, _), published, gone = presence_nodes
    await a.presence.join(branch_id=1, user_id=1, name="Alice", client_id="a1")
    await b.presence.join(branch_id=1, user_id=1, name="Alice", client_id="a2")
    await b.presence.join(branch_id=1, user_id=2, name="Bob", client_id="b1")
    expected = [
        {"user": {"id": 1, "name": "Alice"}, "clients": 2},
        {"user": {"id": 2, "name": "Bob"}, "clients": 1},
    ]
    assert await a.presence.viewers(branch_id=1) == expected
    assert await b.presence.viewers(branch_id=1) == expected
    assert await a.presence.streams_of_user(1) == 2
    assert published.events[-1] == (1, "presence", {"viewers": expected})
    # The cap counts streams on every node.
    with pytest.raises(Exception, match="too many open streams"):
        await a.presence.join(branch_id=2, user_id=1, name="Alice", client_id="a3", max_streams=2)
    assert gone.calls == []


async def test_a_tab_moving_between_nodes_keeps_its_client(
    presence_nodes: tuple[list[Node], Recorder, Gone],
) -> None:
    (a, b, _), _published, gone = presence_nodes
    await a.presence.join(branch_id=1, user_id=1, name="Alice", client_id="a1")
    await a.presence.leave(branch_id=1, user_id=1, client_id="a1")  # grace starts on A
    await b.presence.join(branch_id=1, user_id=1, name="Alice", client_id="a1")
    await asyncio.sleep(0.5)
    assert gone.calls == []
    await b.presence.leave(branch_id=1, user_id=1, client_id="a1")
    await eventually(lambda: gone.calls == [(1, 1, "a1")])
    await asyncio.sleep(0.3)
    assert gone.calls == [(1, 1, "a1")]


@pytest.mark.redis
@pytest.mark.parametrize("presence_nodes", ["redis"], indirect=True)
async def test_streams_of_a_crashed_node_close_once_its_lease_lapses(
    presence_nodes: tuple[list[Node], Recorder, Gone],
) -> None:
    (a, b, c), published, gone = presence_nodes
    await a.presence.join(branch_id=1, user_id=1, name="Alice", client_id="a1")
    await a.presence.join(branch_id=1, user_id=2, name="Bob", client_id="b1")
    await b.presence.join(branch_id=1, user_id=2, name="Bob", client_id="b1")
    await a.crash()
    loop = asyncio.get_running_loop()
    crashed_at = loop.time()
    await eventually(lambda: gone.calls != [])
    # Lease (0.6 s) then grace (0.2 s); Bob's client still has its stream on B.
    assert loop.time() - crashed_at >= 0.6
    await asyncio.sleep(0.5)
    assert gone.calls == [(1, 1, "a1")]  # once, though B and C both sweep
    assert await c.presence.viewers(branch_id=1) == [
        {"user": {"id": 2, "name": "Bob"}, "clients": 1}
    ]
    assert await c.presence.streams_of_user(1) == 0
    assert published.events[-1][2] == {
        "viewers": [{"user": {"id": 2, "name": "Bob"}, "clients": 1}]
    }


@pytest.mark.redis
@pytest.mark.parametrize("presence_nodes", ["redis"], indirect=True)
async def test_a_node_swept_by_mistake_counts_its_streams_again(
    presence_nodes: tuple[list[Node], Recorder, Gone],
) -> None:
    """A partitioned node comes back: its open streams count again on its next renewal."""
    (a, b, _), _published, _gone = presence_nodes
    await a.presence.join(branch_id=1, user_id=1, name="Alice", client_id="a1")
    await a.crash()
    await eventually_async(lambda: _is_registered(b, a, False))
    assert await b.presence.viewers(branch_id=1) == []
    a.stop = asyncio.Event()
    a.start()
    await eventually_async(lambda: _is_registered(b, a, True))
    assert await b.presence.streams_of_user(1) == 1


async def _is_registered(observer: Node, node: Node, expected: bool) -> bool:
    backend: Any = observer.backend
    members = await backend._redis.smembers(backend._prefix + "nodes")
    watched: Any = node.backend
    return (watched.node.encode() in members) == expected


# --- broker ---------------------------------------------------------------------


@dataclass
class BrokerNodes:
    a: Broker
    b: Broker
    db: Database
    world: World
    redis: RedisServer | None

    def cases(self, broker: Broker) -> CaseService:
        return CaseService(self.db, publish=broker.publish, replay_window=10000)


def _state_provider(locks: list[dict[str, Any]]) -> Callable[[int], Awaitable[dict[str, Any]]]:
    async def state(branch_id: int) -> dict[str, Any]:
        return {"locks": locks, "presence": []}

    return state


@pytest.fixture(params=BACKENDS)
async def broker_nodes(request: pytest.FixtureRequest, db_url: str) -> AsyncIterator[BrokerNodes]:
    db = Database(db_url)
    world = await seed_world(db)
    redis: RedisServer | None = None
    if request.param == "memory":
        a = b = Broker(MemoryBrokerBackend(), db=db, metrics=Metrics())
        brokers = [a]
    else:
        from warrantysync.services.broker.redis import RedisBrokerBackend

        redis = _redis(request)
        channel = f"{_prefix()}:events"
        a, b = (
            Broker(RedisBrokerBackend(redis.url, channel=channel), db=db, metrics=Metrics())
            for _ in range(2)
        )
        brokers = [a, b]
    for broker in brokers:
        broker.state_provider = _state_provider([])
        await broker.start()
    yield BrokerNodes(a, b, db, world, redis)
    for broker in brokers:
        await broker.stop()
    await db.dispose()


def subscriber(branch_id: int, user_id: int = 1) -> Subscriber:
    return Subscriber(
        branch_id=branch_id, user_id=user_id, client_id="tab", principal_key=("t", user_id)
    )


async def received(sub: Subscriber, count: int, within: float = 5.0) -> list[bytes]:
    frames: list[bytes] = []
    async with asyncio.timeout(within):
        while len(frames) < count:
            await sub.wait()
            frames.extend(frame for _, frame in sub.drain())
    return frames


def ids_and_kinds(frames: list[bytes]) -> list[tuple[str | None, str]]:
    out = []
    for frame in frames:
        lines = dict(line.split(": ", 1) for line in frame.decode().strip().split("\n"))
        out.append((lines.get("id"), lines["event"]))
    return out


async def test_an_edit_on_one_node_reaches_a_stream_on_another(nodes: BrokerNodes) -> None:
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["phone"]
    sub = subscriber(branch)
    async with nodes.b.subscribe(sub):
        head = nodes.b.head(branch)
        actor = Actor(1, "Alice", "tab-a")
        for name in ("One", "Two", "Three"):
            await nodes.cases(nodes.a).patch(
                case_id=case, changes={"customer_name": name}, expected={}, actor=actor
            )
        await nodes.a.publish_ephemeral(branch, "presence", {"viewers": []})
        frames = await received(sub, 4)
        assert ids_and_kinds(frames) == [
            (str(head + 1), "case-updated"),
            (str(head + 2), "case-updated"),
            (str(head + 3), "case-updated"),
            (None, "presence"),
        ]
        assert b'"customer_name":"Three"' in frames[2]


async def test_an_owner_copy_reaches_only_its_users_streams_on_every_node(
    nodes: BrokerNodes,
) -> None:
    branch = nodes.world.branches["downtown"]
    alice, bob = subscriber(branch, user_id=1), subscriber(branch, user_id=2)
    async with nodes.b.subscribe(alice), nodes.b.subscribe(bob):
        public = {"lock": {"field": "notes", "client_id": None}}
        own = {"lock": {"field": "notes", "client_id": "tab-a"}}
        await nodes.a.publish_ephemeral(branch, "lock-acquired", public, owner=(1, own))
        [mine] = await received(alice, 1)
        [theirs] = await received(bob, 1)
        assert b'"client_id":"tab-a"' in mine and mine.startswith(b"event: lock-acquired\n")
        assert b'"client_id":null' in theirs and b"tab-a" not in theirs


async def test_a_lost_event_is_read_back_from_the_outbox(nodes: BrokerNodes) -> None:
    """An event committed but never fanned out leaves a gap the next one exposes."""
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["phone"]
    sub = subscriber(branch)
    async with nodes.b.subscribe(sub):
        head = nodes.b.head(branch)
        lost = CaseService(nodes.db, publish=_drop, replay_window=10000)
        actor = Actor(1, "Alice", None)
        await lost.patch(case_id=case, changes={"product": "lost"}, expected={}, actor=actor)
        await nodes.cases(nodes.a).patch(
            case_id=case, changes={"product": "seen"}, expected={}, actor=actor
        )
        frames = await received(sub, 2)
        assert ids_and_kinds(frames) == [
            (str(head + 1), "case-updated"),
            (str(head + 2), "case-updated"),
        ]
        assert b'"lost"' in frames[0]


async def _drop(_event: Event) -> None:
    return None


@pytest.mark.redis
@pytest.mark.parametrize("broker_nodes", ["redis"], indirect=True)
async def test_after_redis_lost_everything_missed_events_and_state_arrive(
    nodes: BrokerNodes,
) -> None:
    assert nodes.redis is not None
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["phone"]
    lock = {"case_id": case, "field": "notes", "user": {"id": 1}, "client_id": "tab-a"}
    nodes.b.state_provider = _state_provider([lock])
    nodes.b.state_view = lambda state, user_id: {
        **state,
        "locks": locks_seen_by(state["locks"], user_id),
    }
    sub, other = subscriber(branch), subscriber(branch, user_id=2)
    async with nodes.b.subscribe(sub), nodes.b.subscribe(other):
        head = nodes.b.head(branch)
        actor = Actor(1, "Alice", None)
        # Committed, but their messages die with Redis: pub/sub never carries them.
        missed = CaseService(nodes.db, publish=_drop, replay_window=10000)
        for product in ("p1", "p2"):
            await missed.patch(case_id=case, changes={"product": product}, expected={}, actor=actor)
        await asyncio.sleep(0.3)
        assert sub.drain() == []
        await asyncio.to_thread(nodes.redis.restart, wipe_data=True)
        frames = await received(sub, 4, within=10)
        # Losing the subscription, B tells its streams live state is unknown; on
        # re-subscribing it reads the missed events from the outbox, in order, each
        # once, and sends a `state` with the locks as they are now.
        kinds = ids_and_kinds(frames)
        durable = [k for k in kinds if k[0] is not None]
        assert durable == [(str(head + 1), "case-updated"), (str(head + 2), "case-updated")]
        states = [f for f in frames if f.startswith(b"event: state")]
        assert len(states) == 2
        assert b'"live_state":"unavailable"' in states[0]
        assert b'"field":"notes"' in states[1] and b'"client_id":"tab-a"' in states[1]
        # Each user's streams get the state as that user may see it.
        got: list[bytes] = []
        while sum(f.startswith(b"event: state") for f in got) < 2:
            got += await received(other, 1, within=10)
        theirs = [f for f in got if f.startswith(b"event: state")]
        assert b'"field":"notes"' in theirs[-1] and b'"client_id":null' in theirs[-1]
        # The fast path works again without anyone stepping in.
        await nodes.cases(nodes.a).patch(
            case_id=case, changes={"product": "p3"}, expected={}, actor=actor
        )
        more = await received(sub, 1)
        assert [k for k in ids_and_kinds(more) if k[0] is not None] == [
            (str(head + 3), "case-updated")
        ]


@pytest.mark.redis
async def test_an_event_one_node_could_not_publish_reaches_the_others_once_it_can(
    db_url: str, redis_server: RedisServer
) -> None:
    """Only node A loses Redis; B, subscribed all along, hears of A's save when A is back.

    Without that, B's streams in a quiet branch would wait for the next event
    (which exposes the gap) however long that takes.
    """
    from warrantysync.services.broker.redis import RedisBrokerBackend

    db = Database(db_url)
    world = await seed_world(db)
    relay = await Relay(redis_server.port).start()
    channel = f"{_prefix()}:events"
    backend_a = RedisBrokerBackend(relay.url(), channel=channel)
    a = Broker(backend_a, db=db, metrics=Metrics())
    b = Broker(RedisBrokerBackend(redis_server.url, channel=channel), db=db, metrics=Metrics())
    for broker in (a, b):
        broker.state_provider = _state_provider([])
        await broker.start()
    try:
        branch, case = world.branches["downtown"], world.cases["phone"]
        sub = subscriber(branch)
        async with b.subscribe(sub):
            head = b.head(branch)
            await relay.cut()
            await eventually(lambda: not backend_a._subscribed)
            cases = CaseService(db, publish=a.publish, replay_window=10000)
            actor = Actor(1, "Alice", None)
            for product in ("p1", "p2"):
                await cases.patch(
                    case_id=case, changes={"product": product}, expected={}, actor=actor
                )
            assert backend_a.publish_failures == 2
            await asyncio.sleep(0.3)
            assert sub.drain() == []
            await relay.heal()
            frames = await received(sub, 2, within=15)
            assert ids_and_kinds(frames) == [
                (str(head + 1), "case-updated"),
                (str(head + 2), "case-updated"),
            ]
    finally:
        for broker in (a, b):
            await broker.stop()
        await relay.stop()
        await db.dispose()


@pytest.mark.redis
async def test_publish_while_redis_is_down_delivers_locally_and_never_raises(
    db_url: str,
) -> None:
    from warrantysync.services.broker.redis import RedisBrokerBackend

    server = RedisServer().start()
    db = Database(db_url)
    world = await seed_world(db)
    backend = RedisBrokerBackend(server.url, channel=f"{_prefix()}:events")
    broker = Broker(backend, db=db, metrics=Metrics())
    broker.state_provider = _state_provider([])
    await broker.start()
    try:
        branch, case = world.branches["downtown"], world.cases["phone"]
        sub = subscriber(branch)
        async with broker.subscribe(sub):
            await asyncio.to_thread(server.stop)
            await eventually(lambda: not backend._subscribed)
            assert not await backend.healthy()
            told = ids_and_kinds(await received(sub, 1))
            assert told == [(None, "state")]  # live state unavailable, see test_redis_down.py
            cases = CaseService(db, publish=broker.publish, replay_window=10000)
            body = await cases.patch(
                case_id=case, changes={"product": "offline"}, expected={}, actor=Actor(1, "A")
            )
            assert body["product"] == "offline"
            assert backend.publish_failures == 1
            assert ids_and_kinds(await received(sub, 1))[0][1] == "case-updated"
    finally:
        await broker.stop()
        server.stop()
        await db.dispose()


@pytest.fixture
def nodes(broker_nodes: BrokerNodes) -> BrokerNodes:
    return broker_nodes
