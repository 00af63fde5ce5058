"""Redis away: reading goes on, and says that live locks and presence are unknown.

One node on SQLite with Redis, as an operator meets it: Redis stops, the
snapshot and new streams are still served with ``live_state: "unavailable"``
(and no locks or viewers, which nobody can know), the per-user stream cap is
counted on the node, saves carrying ``expected`` work and reach the node's
streams; streams already open are told with a ``state`` event. When Redis
is back (empty) the streams get ``state`` with ``live_state: "ok"`` and the
node's streams are counted again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from cluster import events_until
from conftest import LiveFactory, login
from factories import World
from live import LiveServer, reading
from servers import RedisServer
from warrantysync.services.redisconn import COMMAND_TIMEOUT

pytestmark = pytest.mark.redis

REDIS_DB = 5


@pytest.fixture
def node(live_factory: LiveFactory, redis_server: RedisServer) -> tuple[LiveServer, World]:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    return live_factory(redis_url=url, max_streams_per_user="2")


@pytest.fixture
def redis_outage(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Hands the test a running Redis; whatever the test does, it is running afterwards."""
    yield redis_server
    if redis_server.pid is None or not redis_server._answers():
        redis_server.up(wipe_data=True)


@pytest.fixture
async def clients(node: tuple[LiveServer, World]) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    server, _world = node
    opened = {}
    for name in ("alice", "bob"):
        http = httpx.AsyncClient(base_url=server.url, timeout=15)
        http.headers.update(await login(http, f"{name}@example.com"))
        opened[name] = http
    yield opened
    for http in opened.values():
        await http.aclose()


async def live_state_becomes(http: httpx.AsyncClient, branch: int, wanted: str) -> None:
    while True:
        if (await http.get(f"/api/branches/{branch}/cases")).json()["live_state"] == wanted:
            return
        await asyncio.sleep(0.2)


async def test_redis_down_still_serves_snapshot_and_streams_with_the_flag(
    node: tuple[LiveServer, World],
    clients: dict[str, httpx.AsyncClient],
    redis_outage: RedisServer,
) -> None:
    _server, world = node
    alice, bob = clients["alice"], clients["bob"]
    branch, case = world.branches["downtown"], world.cases["phone"]
    events = f"/api/branches/{branch}/events"
    cases = f"/api/branches/{branch}/cases"

    async with reading(alice, f"{events}?client_id=alice-1") as before:
        ready = await before.next("ready")
        assert ready.data["live_state"] == "ok"
        healthy = await alice.get(cases)
        assert healthy.status_code == 200
        assert healthy.json()["live_state"] == "ok"
        assert [v["user"]["name"] for v in healthy.json()["presence"]] == ["Alice Johnson"]
        current = (await alice.get(f"/api/cases/{case}")).json()

        await asyncio.to_thread(redis_outage.down)
        # An open stream is told at once (the node notices within its ping period).
        lost = (await events_until(before, "state", timeout=15))[-1]
        assert lost.data == {
            "locks": [],
            "presence": [],
            "row_presence": [],
            "live_state": "unavailable",
        }

        snapshot = await alice.get(cases)
        assert snapshot.status_code == 200, snapshot.text
        body = snapshot.json()
        assert body["live_state"] == "unavailable"
        assert body["locks"] == [] and body["presence"] == []
        assert len(body["cases"]) == len(healthy.json()["cases"])
        assert snapshot.headers["etag"] != healthy.headers["etag"]

        async with (
            reading(bob, f"{events}?client_id=bob-1") as during,
            reading(alice, f"{events}?client_id=alice-2") as second,
        ):
            assert during.status == 200 and second.status == 200
            opened = await during.next("ready")
            assert opened.data["live_state"] == "unavailable"
            assert opened.data["locks"] == [] and opened.data["presence"] == []
            await second.next("ready")
            # The cap (2 per user) is counted on the node while Redis cannot count it.
            third = await alice.get(f"{events}?client_id=alice-3")
            assert third.status_code == 429, third.text
            assert third.json()["error"] == "too_many_streams"

            lock = await alice.put(
                f"/api/cases/{case}/locks/product", headers={"X-Client-Id": "alice-1"}
            )
            assert lock.status_code == 503
            saved = await alice.patch(
                f"/api/cases/{case}",
                json={
                    "changes": {"product": "Pixel 9"},
                    "expected": {"product": current["product"]},
                },
                headers={"X-Client-Id": "alice-1"},
            )
            assert saved.status_code == 200, saved.text
            update = await during.next("case-updated", skip=("heartbeat", "presence", "state"))
            assert update.data["changes"] == {"product": "Pixel 9"}

            await asyncio.to_thread(redis_outage.up, wipe_data=True)

            for stream in (before, during):
                state = (await events_until(stream, "state", timeout=15))[-1]
                assert state.data["live_state"] == "ok"

            async def counted_again() -> list[str]:
                while True:
                    again = (await bob.get(cases)).json()
                    names = sorted(v["user"]["name"] for v in again["presence"])
                    if again["live_state"] == "ok" and names == ["Alice Johnson", "Bob Smith"]:
                        return names
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(counted_again(), 10)


async def test_a_frozen_redis_does_not_hold_up_snapshots_or_new_streams(
    node: tuple[LiveServer, World],
    clients: dict[str, httpx.AsyncClient],
    redis_outage: RedisServer,
) -> None:
    """A Redis that stops answering (not refusing) costs each call the command timeout.

    Once the node has noticed, nothing waits on Redis any more: a snapshot
    and a new stream are served at once (generous limits: a loaded machine).
    """
    _server, world = node
    bob = clients["bob"]
    branch = world.branches["downtown"]
    redis_outage.pause()
    try:
        await asyncio.wait_for(live_state_becomes(bob, branch, "unavailable"), 30)
        # The node's first presence upkeep may still be waiting on Redis; then
        # each answer comes within one Redis command timeout: none waited on Redis.
        async with reading(bob, f"/api/branches/{branch}/events?client_id=bob-w") as stream:
            await stream.next("ready", timeout=15)
        for n in range(3):
            async with asyncio.timeout(COMMAND_TIMEOUT):
                snapshot = await bob.get(f"/api/branches/{branch}/cases")
                assert snapshot.json()["live_state"] == "unavailable"
                path = f"/api/branches/{branch}/events?client_id=bob-f{n}"
                async with reading(bob, path, timeout=COMMAND_TIMEOUT) as stream:
                    ready = await stream.next("ready", timeout=COMMAND_TIMEOUT)
                    assert ready.data["live_state"] == "unavailable"
    finally:
        redis_outage.resume()
    async with reading(bob, f"/api/branches/{branch}/events?client_id=bob-g") as stream:
        await events_until(stream, "ready", timeout=15)

        await asyncio.wait_for(live_state_becomes(bob, branch, "ok"), 30)
