"""Two (or three) ``warrantysync serve`` processes on one Redis and one PostgreSQL act as one.

Node A and node B live for the whole module; the crash test starts and
SIGKILLs a node of its own, so the tests do not depend on their order.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator

import httpx
import pytest

from cluster import Cluster, events_until, on, two_nodes, user
from live import reading
from servers import PostgresServer, RedisServer
from warrantysync.services.presence.redis import LEASE_TTL, MAINTAIN_EVERY

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.postgresql]

LOCK_TTL = 20.0  # longer than lease + grace, so a crash release cannot be mistaken for expiry
GRACE = 0.5


@pytest.fixture(scope="module")
def nodes(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    with two_nodes(
        postgres_server,
        redis_server,
        tmp_path_factory.mktemp("cluster"),
        redis_db=1,
        lock_ttl=str(LOCK_TTL),
        disconnect_grace=str(GRACE),
    ) as running:
        yield running


async def test_a_lock_on_one_node_is_refused_on_the_other_and_edits_cross(
    nodes: Cluster,
) -> None:
    a, b = nodes.nodes[:2]
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["phone"]
    async with (
        user(a, "alice@example.com") as (alice, alice_h),
        user(b, "bob@example.com") as (bob, bob_h),
        reading(bob, f"/api/branches/{branch}/events?client_id=bob-b") as stream,
    ):
        ready = await stream.next("ready")
        lock = await alice.put(
            f"/api/cases/{case}/locks/product", headers={**alice_h, "X-Client-Id": "alice-a"}
        )
        assert lock.status_code == 200, lock.text
        token = lock.json()["lock"]["token"]
        acquired = await stream.next("lock-acquired")
        assert acquired.data["lock"]["user"]["name"] == "Alice Johnson"
        assert acquired.data["lock"]["client_id"] is None  # from node A, without her tab's id

        refused = await bob.put(
            f"/api/cases/{case}/locks/product", headers={**bob_h, "X-Client-Id": "bob-b"}
        )
        assert refused.status_code == 423
        assert refused.json()["lock"]["user"]["name"] == "Alice Johnson"
        assert refused.json()["lock"]["client_id"] is None  # not Bob's to know
        assert "token" not in refused.json()["lock"]
        blocked = await bob.patch(
            f"/api/cases/{case}",
            json={"changes": {"product": "Bob's"}},
            headers={**bob_h, "X-Client-Id": "bob-b"},
        )
        assert blocked.status_code == 423

        saved = await alice.patch(
            f"/api/cases/{case}",
            json={"changes": {"product": "Pixel 9"}, "lock_tokens": {"product": token}},
            headers={**alice_h, "X-Client-Id": "alice-a"},
        )
        assert saved.status_code == 200, saved.text
        updated = await stream.next("case-updated")
        assert updated.data["changes"] == {"product": "Pixel 9"}
        assert int(updated.id) == int(ready.id) + 1

        released = await alice.delete(
            f"/api/cases/{case}/locks/product", headers={**alice_h, "X-Client-Id": "alice-a"}
        )
        assert released.status_code == 204
        gone = await stream.next("lock-released")
        assert gone.data["reason"] == "released"


async def test_a_stream_moving_to_another_node_gets_exactly_the_missed_events(
    nodes: Cluster,
) -> None:
    a, b = nodes.nodes[:2]
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["laptop"]
    async with (
        user(a, "bob@example.com") as (bob_a, _),
        user(b, "alice@example.com") as (
            alice,
            alice_h,
        ),
    ):
        async with reading(bob_a, f"/api/branches/{branch}/events?client_id=bob-tab") as first:
            last_seen = (await first.next("ready")).id
        for n in range(3):  # while Bob's tab is between nodes
            response = await alice.patch(
                f"/api/cases/{case}", json={"changes": {"notes": f"n{n}"}}, headers=alice_h
            )
            assert response.status_code == 200
        async with (
            on(bob_a, b) as bob_b,
            reading(
                bob_b,
                f"/api/branches/{branch}/events?client_id=bob-tab",
                headers={"Last-Event-ID": last_seen},
            ) as moved,
        ):
            seen = await events_until(moved, "ready")
            replayed = [e for e in seen if e.event == "case-updated"]
            assert [int(e.id) for e in replayed] == [int(last_seen) + i for i in (1, 2, 3)]
            assert [e.data["changes"]["notes"] for e in replayed] == ["n0", "n1", "n2"]
            assert seen[-1].id == str(int(last_seen) + 3)
            response = await alice.patch(
                f"/api/cases/{case}", json={"changes": {"notes": "live"}}, headers=alice_h
            )
            live = await moved.next("case-updated")
            assert int(live.id) == int(last_seen) + 4
            extra = [e for e in await moved.drain(0.5) if e.event == "case-updated"]
            assert extra == []  # nothing twice


async def test_a_killed_node_loses_no_acknowledged_edit_and_frees_its_locks(
    nodes: Cluster,
) -> None:
    a = nodes.nodes[0]
    c = nodes.start()
    branch, case = nodes.world.branches["downtown"], nodes.world.cases["phone"]
    async with (
        user(c, "alice@example.com") as (alice, alice_h),
        user(a, "dave@example.com") as (dave, _),
    ):
        async with (
            reading(alice, f"/api/branches/{branch}/events?client_id=alice-c") as alice_stream,
            reading(dave, f"/api/branches/{branch}/events?client_id=dave-a") as watch,
        ):
            await alice_stream.next("ready")
            await watch.next("ready")
            lock = await alice.put(
                f"/api/cases/{case}/locks/issue", headers={**alice_h, "X-Client-Id": "alice-c"}
            )
            assert lock.status_code == 200
            await watch.next("lock-acquired")

            acknowledged: dict[int, str] = {}

            async def edit(n: int) -> None:
                value = f"edit {n}"
                try:
                    response = await alice.patch(
                        f"/api/cases/{case}",
                        json={"changes": {"serial_number": value}},
                        headers={**alice_h, "X-Client-Id": "alice-c"},
                    )
                except httpx.HTTPError:
                    return  # cut off by the kill: never acknowledged
                if response.status_code == 200:
                    acknowledged[response.json()["version"]] = value

            for n in range(3):
                await edit(n)
            writers = [asyncio.create_task(edit(n)) for n in range(3, 23)]
            await asyncio.sleep(0.05)
            c.signal(signal.SIGKILL)
            killed_at = asyncio.get_running_loop().time()
            await asyncio.gather(*writers)
            c.wait(5)

            released = await watch.next(
                "lock-released", timeout=15, skip=("heartbeat", "presence", "case-updated")
            )
            waited = asyncio.get_running_loop().time() - killed_at
            assert released.data["reason"] == "disconnected"
            assert released.data["user"]["name"] == "Alice Johnson"
            # Not at once: the lease must lapse (renewed about every upkeep round
            # before the kill; allow two for scheduling), then the grace runs.
            assert waited >= LEASE_TTL - 2 * MAINTAIN_EVERY + GRACE
            assert waited < LOCK_TTL / 2  # and not by expiry

        assert len(acknowledged) >= 3
        history = (await dave.get(f"/api/cases/{case}/history")).json()
        stored = {h["version"]: h["new"] for h in history if h["field"] == "serial_number"}
        for version, value in acknowledged.items():
            assert stored.get(version) == value
        final = (await dave.get(f"/api/cases/{case}")).json()
        assert final["serial_number"] == stored[max(stored)]
        viewers = {
            v["user"]["name"]
            for v in (await dave.get(f"/api/branches/{branch}/cases")).json()["presence"]
        }
        assert "Alice Johnson" not in viewers
