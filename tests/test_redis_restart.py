"""Redis goes away and comes back empty while two nodes keep serving.

The contract: docs/protocol.md, "Redis unreachable".

While Redis is down: ``/readyz`` says degraded (200), lock requests answer 503, and a save
proceeds only when it carries ``expected`` for every changed field (others
503 with ``Retry-After``); open streams stay open. Once Redis is back — with
its data wiped, as after a crash or a failover to an empty replica — nothing
needs a hand: fan-out resumes, the events committed meanwhile reach every
stream through the outbox, and a lock token from before is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from cluster import Cluster, events_until, two_nodes, user
from live import reading
from servers import PostgresServer, RedisServer

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.postgresql]


@pytest.fixture
def nodes(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    with two_nodes(
        postgres_server, redis_server, tmp_path_factory.mktemp("restart"), redis_db=2, lock_ttl="20"
    ) as running:
        yield running


async def test_everything_recovers_after_redis_lost_its_data(
    nodes: Cluster, redis_server: RedisServer
) -> None:
    a, b = nodes.nodes
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["phone"]
    url = f"/api/cases/{case}"
    async with (
        user(a, "alice@example.com") as (alice, alice_h),
        user(b, "bob@example.com") as (bob, _),
        reading(alice, f"/api/branches/{branch}/events?client_id=alice-a") as on_a,
        reading(bob, f"/api/branches/{branch}/events?client_id=bob-b") as on_b,
    ):
        ready = await on_b.next("ready")
        await on_a.next("ready")
        head = int(ready.id)
        mine = {**alice_h, "X-Client-Id": "alice-a"}
        lock = await alice.put(f"{url}/locks/notes", headers=mine)
        assert lock.status_code == 200
        token = lock.json()["lock"]["token"]
        current = (await alice.get(url)).json()

        await asyncio.to_thread(redis_server.down)
        try:
            for node in (a, b):
                async with httpx.AsyncClient(base_url=node.url) as probe:
                    ready_check = await probe.get("/readyz")
                    # Degraded, not unready: a load balancer keeps the node in.
                    assert ready_check.status_code == 200
                    assert ready_check.json()["status"] == "degraded"
                    assert ready_check.json()["checks"]["redis"] == "unreachable"
            refused = await alice.put(f"{url}/locks/product", headers=mine)
            assert refused.status_code == 503
            assert refused.headers["retry-after"]
            assert refused.json()["error"] == "unavailable"

            blind = await alice.patch(url, json={"changes": {"product": "blind"}}, headers=mine)
            assert blind.status_code == 503
            assert blind.headers["retry-after"]
            half = await alice.patch(
                url,
                json={
                    "changes": {"product": "half", "issue": "half"},
                    "expected": {"product": current["product"]},
                },
                headers=mine,
            )
            assert half.status_code == 503
            fenced = []
            for n in range(2):
                response = await alice.patch(
                    url,
                    json={
                        "changes": {"product": f"fenced {n}"},
                        "expected": {"product": current["product"] if n == 0 else "fenced 0"},
                    },
                    headers=mine,
                )
                assert response.status_code == 200, response.text
                fenced.append(response.json()["version"])
            stale = await alice.patch(
                url,
                json={"changes": {"product": "late"}, "expected": {"product": "fenced 0"}},
                headers=mine,
            )
            assert stale.status_code == 409  # the database still fences
        finally:
            await asyncio.to_thread(redis_server.up, wipe_data=True)

        # Both streams stayed open and get the outage's commits, in order, from the outbox.
        for stream in (on_a, on_b):
            # The first `state` said live state was unavailable; the one after
            # the node re-subscribed says it is back.
            received = await events_until(stream, "state", timeout=15)
            while received[-1].data["live_state"] != "ok":
                received += await events_until(stream, "state", timeout=15)
            seen = [e for e in received if e.event == "case-updated"]
            assert [int(e.id) for e in seen] == [head + 1, head + 2]
            assert [e.data["changes"]["product"] for e in seen] == ["fenced 0", "fenced 1"]

        async def ready_again() -> None:
            while True:
                async with httpx.AsyncClient(base_url=b.url) as probe:
                    if (await probe.get("/readyz")).json()["status"] == "ready":
                        return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(ready_again(), 10)

        async def presence_restored() -> None:
            # Each node writes its open streams back into the empty Redis.
            while True:
                snapshot = (await bob.get(f"/api/branches/{branch}/cases")).json()
                names = sorted(v["user"]["name"] for v in snapshot["presence"])
                if names == ["Alice Johnson", "Bob Smith"]:
                    return
                await asyncio.sleep(0.1)

        await asyncio.wait_for(presence_restored(), 10)

        # The pre-restart token names a lock Redis no longer has: refused, never reused.
        lost = await alice.patch(
            url,
            json={"changes": {"notes": "mine?"}, "lock_tokens": {"notes": token}},
            headers=mine,
        )
        assert lost.status_code == 409
        assert lost.json()["error"] == "lock_lost"
        again = await alice.put(f"{url}/locks/notes", headers=mine)
        assert again.status_code == 200
        assert again.json()["lock"]["token"] != token

        # Fan-out between the nodes works again with no one stepping in.
        live = await alice.patch(url, json={"changes": {"issue": "after"}}, headers=mine)
        assert live.status_code == 200
        update = await on_b.next(
            "case-updated", skip=("heartbeat", "presence", "lock-acquired", "state")
        )
        assert int(update.id) == head + 3
        assert update.data["changes"] == {"issue": "after"}
