"""One stream's life (services/streams.py), locks over the stream included.

The contract: docs/protocol.md, "Locks" and "The event stream".

Most tests go through a real uvicorn server, edits and lock events included;
timings are shortened through the settings (see ``LIVE_ENV`` in conftest):
heartbeat 1 s, lock TTL 3 s, disconnect grace 0.5 s. The last ones drive a
``Stream`` in-process: its replay racing commits, and ``async with stream``
cleaning up however the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from conftest import LiveFactory, login
from factories import World, seed_world
from live import LiveServer, reading
from waits import failed_connections_stopped, sqlite_worker_threads
from warrantysync.container import Services
from warrantysync.errors import TooManyStreams, Unavailable
from warrantysync.services.accounts import Principal
from warrantysync.services.broker import Broker
from warrantysync.services.broker.memory import MemoryBrokerBackend
from warrantysync.services.broker.replay import REPLAY_CONCURRENCY
from warrantysync.services.cases import Actor
from warrantysync.services.events import CASE_UPDATED
from warrantysync.services.metrics import Metrics
from warrantysync.services.streams import Stream, StreamConfig
from warrantysync.storage import outbox
from warrantysync.storage.db import Database


class Tab:
    """One logged-in browser tab: its own cookie jar, CSRF token and client id."""

    def __init__(self, http: httpx.AsyncClient, csrf: dict[str, str], client_id: str) -> None:
        self.http = http
        self.client_id = client_id
        self.headers = {**csrf, "X-Client-Id": client_id}

    async def patch(
        self, case_id: int, changes: dict[str, object], **extra: object
    ) -> httpx.Response:
        body = {"changes": changes, **extra}
        return await self.http.patch(f"/api/cases/{case_id}", json=body, headers=self.headers)

    async def lock(self, case_id: int, field: str) -> httpx.Response:
        return await self.http.put(f"/api/cases/{case_id}/locks/{field}", headers=self.headers)

    async def unlock(self, case_id: int, field: str) -> httpx.Response:
        return await self.http.delete(f"/api/cases/{case_id}/locks/{field}", headers=self.headers)

    def events_path(self, branch_id: int, last_event_id: str | None = None) -> str:
        path = f"/api/branches/{branch_id}/events?client_id={self.client_id}"
        return path if last_event_id is None else f"{path}&last_event_id={last_event_id}"


@pytest.fixture
async def tabs(live: tuple[LiveServer, World]) -> AsyncIterator[dict[str, Tab]]:
    server, _world = live
    opened: dict[str, Tab] = {}
    clients = []
    for name in ("alice", "bob", "dave"):
        http = httpx.AsyncClient(base_url=server.url, timeout=10)
        clients.append(http)
        opened[name] = Tab(http, await login(http, f"{name}@example.com"), f"{name}-tab")
    yield opened
    for http in clients:
        await http.aclose()


async def test_edit_by_one_user_reaches_the_other(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    branch, case = world.branches["downtown"], world.cases["phone"]
    alice, bob = tabs["alice"], tabs["bob"]
    async with reading(bob.http, bob.events_path(branch)) as stream:
        ready = await stream.next("ready")
        assert ready.data["client_id"] == "bob-tab"
        assert ready.data["heartbeat_ms"] == 1000
        response = await alice.patch(case, {"customer_name": "Jane Roe"})
        assert response.status_code == 200
        event = await stream.next("case-updated")
        assert event.data["changes"] == {"customer_name": "Jane Roe"}
        assert event.data["by"]["name"] == "Alice Johnson"
        assert event.data["client_id"] == "alice-tab"
        assert event.data["version"] == 2
        assert int(event.id) == int(ready.id) + 1


async def test_stream_headers_and_presence(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    branch = world.branches["downtown"]
    alice, bob = tabs["alice"], tabs["bob"]
    async with alice.http.stream("GET", alice.events_path(branch)) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        async with reading(bob.http, bob.events_path(branch)) as stream:
            ready = await stream.next("ready")
            names = sorted(v["user"]["name"] for v in ready.data["presence"])
            assert names == ["Alice Johnson", "Bob Smith"]
    async with reading(bob.http, bob.events_path(branch)) as stream:
        await stream.next("ready")
        # Alice's stream is gone: the next presence event lists Bob alone.
        snapshot = await bob.http.get(f"/api/branches/{branch}/cases")
        assert [v["user"]["name"] for v in snapshot.json()["presence"]] == ["Bob Smith"]


async def test_lock_conflict_names_the_holder_and_events_flow(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    branch, case = world.branches["downtown"], world.cases["phone"]
    alice, bob = tabs["alice"], tabs["bob"]
    async with reading(bob.http, bob.events_path(branch)) as stream:
        await stream.next("ready")
        taken = await alice.lock(case, "customer_name")
        assert taken.status_code == 200
        assert taken.json()["lock"]["token"]
        acquired = await stream.next("lock-acquired")
        assert acquired.data["lock"]["user"]["name"] == "Alice Johnson"
        assert "token" not in acquired.data["lock"]

        refused = await bob.lock(case, "customer_name")
        assert refused.status_code == 423
        body = refused.json()
        assert body["error"] == "locked"
        assert body["lock"]["user"]["name"] == "Alice Johnson"
        assert "token" not in body["lock"]
        assert (await bob.patch(case, {"customer_name": "Bob was here"})).status_code == 423

        assert (await alice.unlock(case, "customer_name")).status_code == 204
        released = await stream.next("lock-released")
        assert released.data["reason"] == "released"
        assert released.data["user"]["name"] == "Alice Johnson"
        assert (await bob.lock(case, "customer_name")).status_code == 200


async def test_a_forced_release_names_the_manager(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    branch, case = world.branches["downtown"], world.cases["phone"]
    alice, dave = tabs["alice"], tabs["dave"]
    async with reading(alice.http, alice.events_path(branch)) as stream:
        await stream.next("ready")
        assert (await alice.lock(case, "notes")).status_code == 200
        await stream.next("lock-acquired")
        assert (await dave.unlock(case, "notes")).status_code == 204
        released = await stream.next("lock-released")
        assert released.data["reason"] == "forced"
        assert released.data["user"]["name"] == "Alice Johnson"
        assert released.data["client_id"] == "alice-tab"
        assert released.data["by"] == {"id": world.users["dave"], "name": "Dave Kim"}
        # The owner's own release names nobody else (another field: the forced
        # release bars her from this one for a while).
        assert (await alice.lock(case, "issue")).status_code == 200
        await stream.next("lock-acquired")
        assert (await alice.unlock(case, "issue")).status_code == 204
        released = await stream.next("lock-released")
        assert released.data["reason"] == "released" and "by" not in released.data


async def test_lock_expiry_and_disconnect_release_publish_events(
    live_factory: LiveFactory,
) -> None:
    server, world = live_factory(lock_ttl="1")
    branch, case = world.branches["downtown"], world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=server.url) as a,
        httpx.AsyncClient(base_url=server.url) as b,
    ):
        alice = Tab(a, await login(a, "alice@example.com"), "alice-tab")
        bob = Tab(b, await login(b, "bob@example.com"), "bob-tab")
        async with reading(bob.http, bob.events_path(branch)) as watcher:
            await watcher.next("ready")
            # Expiry: nobody renews, the release goes out within a second of it.
            lock = (await alice.lock(case, "notes")).json()["lock"]
            await watcher.next("lock-acquired")
            released = await watcher.next("lock-released", timeout=5)
            assert released.data["reason"] == "expired"
            late = time.time() - _epoch(lock["expires_at"])
            assert late < 1.5

            # Disconnect: the owner's only stream closes, the grace passes.
            async with reading(alice.http, alice.events_path(branch)) as own:
                await own.next("ready")
                assert (await alice.lock(case, "issue")).status_code == 200
                await watcher.next("lock-acquired")
            released = await watcher.next("lock-released", timeout=5)
            assert released.data["reason"] == "disconnected"
            assert released.data["field"] == "issue"


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def test_resume_replays_exactly_the_missed_events(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    branch, case = world.branches["downtown"], world.cases["phone"]
    alice, bob = tabs["alice"], tabs["bob"]
    async with reading(bob.http, bob.events_path(branch)) as stream:
        last = (await stream.next("ready")).id
    for n in range(3):
        assert (await alice.patch(case, {"notes": f"note {n}"})).status_code == 200
    async with reading(bob.http, bob.events_path(branch, last)) as stream:
        replayed = [await stream.next("case-updated") for _ in range(3)]
        ready = await stream.next("ready")
        assert [e.data["changes"]["notes"] for e in replayed] == ["note 0", "note 1", "note 2"]
        assert [int(e.id) for e in replayed] == [int(last) + 1, int(last) + 2, int(last) + 3]
        assert ready.id == replayed[-1].id
        assert (await alice.patch(case, {"notes": "live"})).status_code == 200
        live_event = await stream.next("case-updated")
        assert int(live_event.id) == int(ready.id) + 1
        assert [e for e in await stream.drain() if e.event.startswith("case-")] == []
    # The browser's own reconnect sends Last-Event-ID; it wins over the query.
    headers = {"Last-Event-ID": replayed[1].id}
    async with reading(bob.http, bob.events_path(branch, "0"), headers) as stream:
        first = await stream.next("case-updated")
        assert first.id == replayed[2].id


async def test_resume_beyond_the_window_gets_sync_required(live_factory: LiveFactory) -> None:
    server, world = live_factory(replay_window="3")
    branch, case = world.branches["downtown"], world.cases["phone"]
    async with httpx.AsyncClient(base_url=server.url) as a:
        alice = Tab(a, await login(a, "alice@example.com"), "alice-tab")
        async with reading(alice.http, alice.events_path(branch)) as stream:
            last = (await stream.next("ready")).id
        for n in range(5):
            assert (await alice.patch(case, {"notes": f"n{n}"})).status_code == 200
        for resume in (last, "not-a-number", "999999"):
            async with reading(alice.http, alice.events_path(branch, resume)) as stream:
                assert (await stream.next("sync-required", "case-updated")).event == "sync-required"
                ready = await stream.next("ready")
                assert int(ready.id) == int(last) + 5


async def test_late_writer_is_refused_and_the_newer_value_kept(live_factory: LiveFactory) -> None:
    server, world = live_factory(lock_ttl="1")
    case = world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=server.url) as a,
        httpx.AsyncClient(base_url=server.url) as b,
    ):
        alice = Tab(a, await login(a, "alice@example.com"), "alice-tab")
        bob = Tab(b, await login(b, "bob@example.com"), "bob-tab")
        original = (await a.get(f"/api/cases/{case}")).json()["customer_name"]
        token_a = (await alice.lock(case, "customer_name")).json()["lock"]["token"]
        await asyncio.sleep(1.6)  # Alice's lock expires unrenewed
        token_b = (await bob.lock(case, "customer_name")).json()["lock"]["token"]
        assert token_b != token_a
        saved = await bob.patch(
            case,
            {"customer_name": "Bob's value"},
            expected={"customer_name": original},
            lock_tokens={"customer_name": token_b},
        )
        assert saved.status_code == 200
        late = {
            "expected": {"customer_name": original},
            "lock_tokens": {"customer_name": token_a},
        }
        refused = await alice.patch(case, {"customer_name": "Alice's stale value"}, **late)
        assert refused.status_code == 423
        assert (await bob.unlock(case, "customer_name")).status_code == 204
        refused = await alice.patch(case, {"customer_name": "Alice's stale value"}, **late)
        assert refused.status_code == 409
        assert refused.json()["error"] == "lock_lost"
        no_token = await alice.patch(
            case, {"customer_name": "Alice's stale value"}, expected={"customer_name": original}
        )
        assert no_token.status_code == 409
        assert no_token.json()["error"] == "conflict"
        assert no_token.json()["current"] == {"customer_name": "Bob's value"}
        assert (await a.get(f"/api/cases/{case}")).json()["customer_name"] == "Bob's value"


async def test_heartbeat_arrives_with_the_head_id(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    bob = tabs["bob"]
    async with reading(bob.http, bob.events_path(world.branches["downtown"])) as stream:
        ready = await stream.next("ready")
        beat = await stream.next("heartbeat", timeout=3, skip=("presence",))
        assert beat.data["last_event_id"] == ready.id


async def test_revoked_session_stream_closes_within_a_heartbeat(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    _server, world = live
    bob = tabs["bob"]
    async with reading(bob.http, bob.events_path(world.branches["downtown"])) as stream:
        await stream.next("ready")
        logout = await bob.http.post("/api/auth/logout", headers=bob.headers)
        assert logout.status_code == 204
        started = time.monotonic()
        await asyncio.wait_for(stream.closed.wait(), 3)
        assert time.monotonic() - started < 2.5


async def test_shutdown_says_goodbye_and_exits_promptly(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    server, world = live
    bob = tabs["bob"]
    async with reading(bob.http, bob.events_path(world.branches["downtown"])) as stream:
        await stream.next("ready")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        goodbye = await stream.next("goodbye", timeout=5)
        assert goodbye.data["reason"] == "shutdown"
        assert 0 < goodbye.data["retry_ms"] <= 30000
        # uvicorn re-raises the signal it caught once it has shut down cleanly.
        assert server.wait(timeout=8) in (0, -signal.SIGTERM)
        assert time.monotonic() - started < 6


async def test_goodbye_also_sets_the_sse_retry_field_to_its_jittered_delay(
    live: tuple[LiveServer, World], tabs: dict[str, Tab]
) -> None:
    """A standard EventSource never reads ``retry_ms``: the ``retry:`` field must say it too."""
    server, world = live
    bob = tabs["bob"]
    blocks: list[dict[str, str]] = []
    async with bob.http.stream(
        "GET", bob.events_path(world.branches["downtown"]), headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200
        block: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line:
                name, _, value = line.partition(":")
                block[name] = value.removeprefix(" ")
                continue
            blocks.append(block)
            block = {}
            if blocks[-1].get("event") == "ready":
                server.signal(signal.SIGTERM)
    goodbye = next(b for b in blocks if b.get("event") == "goodbye")
    assert blocks[-1] is goodbye  # nothing after it
    retry_ms = json.loads(goodbye["data"])["retry_ms"]
    assert int(goodbye["retry"]) == retry_ms
    # The stream opened with the default; the goodbye's value is the last one parsed.
    assert [int(b["retry"]) for b in blocks if "retry" in b] == [1000, retry_ms]


# --- in-process: the replay and the stream's one ``async with`` ----------------


def _stream(
    services: Services,
    world: World,
    *,
    resume: str | None = None,
    broker: Broker | None = None,
    max_streams: int | None = None,
) -> Stream:
    return Stream(
        broker=broker or services.broker,
        locks=services.locks,
        presence=services.presence,
        config=StreamConfig(heartbeat_ms=1000, lock_ttl_ms=30000, max_streams=max_streams),
        principal=Principal(world.users["bob"], "Bob", "bob@example.com", session_id=1),
        branch_id=world.branches["downtown"],
        client_id="reader",
        resume=resume,
    )


async def _clean(services: Services, world: World, broker: Broker | None = None) -> None:
    assert (broker or services.broker).subscribers() == []
    assert await services.presence.streams_of_user(world.users["bob"]) == 0


async def test_stream_has_no_gap_or_duplicate_while_commits_race_the_replay(
    services: Services, world: World
) -> None:
    """Resume while 60 changes commit concurrently: every id exactly once, in order."""
    branch, case = world.branches["downtown"], world.cases["phone"]
    cases = services.cases
    actor = Actor(world.users["alice"], "Alice", "writer")
    for n in range(5):
        await cases.patch(case_id=case, changes={"notes": f"before {n}"}, expected={}, actor=actor)
    async with services.db.read() as session:
        head_before = await outbox.head(session, branch_id=branch)
    resume = head_before - 3
    stream = _stream(services, world, resume=str(resume))

    async def write() -> None:
        for n in range(60):
            await cases.patch(
                case_id=case, changes={"notes": f"during {n}"}, expected={}, actor=actor
            )

    writer = asyncio.create_task(write())
    seen: list[int] = []
    ready_id = None
    final = head_before + 60
    async with stream:
        frames = stream.frames()
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
    assert ready_id is not None
    assert seen == list(range(resume + 1, final + 1))
    await _clean(services, world)


async def test_inside_the_block_the_stream_is_counted_and_subscribed_after_it_neither(
    services: Services, world: World
) -> None:
    """As broadcaster's test_unsubscribe_w_exception: the body raises, cleanup still happens."""
    stream = _stream(services, world)
    with pytest.raises(RuntimeError, match="the response failed"):
        async with stream:
            assert services.broker.subscribers() == [stream.subscriber]
            assert await services.presence.streams_of_user(world.users["bob"]) == 1
            raise RuntimeError("the response failed")
    await _clean(services, world)


async def test_a_cancelled_stream_cleans_up(services: Services, world: World) -> None:
    stream = _stream(services, world)
    inside = asyncio.Event()

    async def serve() -> None:
        async with stream:
            inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(serve())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _clean(services, world)


async def test_a_refused_replay_says_goodbye_and_cleans_up(
    services: Services, world: World
) -> None:
    """The queue for outbox reads is full: ``goodbye`` with a jittered retry, then gone."""
    admission = services.broker.replay.admission
    admission.max_pending = 0
    stream = _stream(services, world, resume="0")
    async with contextlib.AsyncExitStack() as busy:
        for _ in range(REPLAY_CONCURRENCY):  # every read slot busy, and nobody may wait
            await busy.enter_async_context(admission.slot())
        async with stream:
            opening, live = await stream.opening()
    assert not live
    assert b"event: goodbye\n" in opening and b'"reason":"overloaded"' in opening
    await _clean(services, world)


async def test_refused_at_the_cap_counts_and_subscribes_nothing(
    services: Services, world: World
) -> None:
    async with _stream(services, world, max_streams=1):
        with pytest.raises(TooManyStreams):
            async with _stream(services, world, max_streams=1):
                raise AssertionError("a second stream was let in")
        assert len(services.broker.subscribers()) == 1
    await _clean(services, world)
    value = services.metrics.registry.get_sample_value(
        "warrantysync_rate_limited_total", {"scope": "streams"}
    )
    assert value == 1


async def test_a_subscription_that_fails_uncounts_the_stream(
    services: Services, world: World, tmp_path: Path, migrated_template: Path
) -> None:
    """The branch's head cannot be read (its database is gone): presence is left again."""
    home = tmp_path / "goes-away"
    home.mkdir()
    shutil.copy(migrated_template, home / "x.db")
    db = Database(f"sqlite+aiosqlite:///{home / 'x.db'}")
    await seed_world(db)
    broker = Broker(MemoryBrokerBackend(), db=db, metrics=Metrics())
    await broker.start()
    try:
        shutil.rmtree(home)
        await db.engine.dispose()
        workers = sqlite_worker_threads()
        with pytest.raises(Unavailable):
            async with _stream(services, world, broker=broker):
                raise AssertionError("subscribed without a head")
        await failed_connections_stopped(workers)
        await _clean(services, world, broker)
    finally:
        await broker.stop()
        await db.dispose()
