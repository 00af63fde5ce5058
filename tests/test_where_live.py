"""Row presence and asking for a locked field through a real server and its streams.

The contract: docs/protocol.md, "Row presence" and "Asking for a locked field".
Timings are shortened (``LIVE_ENV`` in conftest): lock TTL 3 s, disconnect
grace 0.5 s; the request timeout is set per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from cluster import Cluster, on, two_nodes, user
from conftest import LiveFactory, login
from factories import World
from live import EventReader, reading
from servers import PostgresServer, RedisServer

SKIP = ("heartbeat", "presence", "row-presence", "lock-renewed")


class Tab:
    def __init__(self, http: httpx.AsyncClient, csrf: dict[str, str], client_id: str) -> None:
        self.http = http
        self.client_id = client_id
        self.headers = {**csrf, "X-Client-Id": client_id}

    async def lock(self, case_id: int, field: str) -> httpx.Response:
        return await self.http.put(f"/api/cases/{case_id}/locks/{field}", headers=self.headers)

    async def unlock(self, case_id: int, field: str) -> httpx.Response:
        return await self.http.delete(f"/api/cases/{case_id}/locks/{field}", headers=self.headers)

    async def ask(self, case_id: int, field: str) -> httpx.Response:
        url = f"/api/cases/{case_id}/locks/{field}/requests"
        return await self.http.post(url, headers=self.headers)

    async def answer(self, request_id: str, answer: Any) -> httpx.Response:
        return await self.http.post(
            f"/api/lock-requests/{request_id}", json={"answer": answer}, headers=self.headers
        )

    async def patch(self, case_id: int, changes: dict[str, Any], token: str) -> httpx.Response:
        body = {"changes": changes, "lock_tokens": {field: token for field in changes}}
        return await self.http.patch(f"/api/cases/{case_id}", json=body, headers=self.headers)

    async def spot(self, branch_id: int, **body: Any) -> httpx.Response:
        return await self.http.put(
            f"/api/branches/{branch_id}/row-presence", json=body, headers=self.headers
        )

    def events(self, branch_id: int) -> str:
        return f"/api/branches/{branch_id}/events?client_id={self.client_id}"


@pytest.fixture
async def tabs(live_factory: LiveFactory) -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    async def open_tabs(**env: str) -> tuple[World, dict[str, Tab]]:
        server, world = live_factory(**env)
        opened = {}
        for name in ("alice", "bob", "carol", "dave"):
            http = httpx.AsyncClient(base_url=server.url, timeout=10)
            clients.append(http)
            opened[name] = Tab(http, await login(http, f"{name}@example.com"), f"{name}-tab")
        return world, opened

    yield open_tabs
    for http in clients:
        await http.aclose()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"] == code and body["message"], body
    return body


async def next_rows(stream: EventReader) -> list[dict[str, Any]]:
    event = await stream.next("row-presence", skip=("heartbeat", "presence"))
    rows: list[dict[str, Any]] = event.data["rows"]
    return rows


async def test_row_presence_reaches_everyone_and_counts_people(tabs: Any) -> None:
    world, t = await tabs()
    branch, phone = world.branches["downtown"], world.cases["phone"]
    alice, bob = t["alice"], t["bob"]
    alice_2 = Tab(alice.http, {"X-CSRF-Token": alice.headers["X-CSRF-Token"]}, "alice-tab-2")
    async with (
        reading(bob.http, bob.events(branch)) as stream,
        reading(alice.http, alice.events(branch)) as alice_stream,
    ):
        ready = await stream.next("ready")
        assert ready.data["row_presence"] == []
        await alice_stream.next("ready")
        assert (await alice.spot(branch, case_id=phone)).status_code == 204
        alice_row = {
            "case_id": phone,
            "user": {"id": world.users["alice"], "name": "Alice Johnson"},
        }
        assert await next_rows(stream) == [{**alice_row, "state": "viewing", "field": None}]
        # A second tab of Alice editing Notes there: still one Alice, now editing.
        response = await alice_2.spot(branch, case_id=phone, field="notes", editing=True)
        assert response.status_code == 204
        assert await next_rows(stream) == [{**alice_row, "state": "editing", "field": "notes"}]
        assert (await alice_2.spot(branch, case_id=None)).status_code == 204
        assert await next_rows(stream) == [{**alice_row, "state": "viewing", "field": None}]
        assert (await alice.spot(branch, case_id=phone, idle=True)).status_code == 204
        assert await next_rows(stream) == [{**alice_row, "state": "idle", "field": None}]
        # The snapshot and a new stream carry the complete row presence.
        snapshot = (await bob.http.get(f"/api/branches/{branch}/cases")).json()
        assert snapshot["row_presence"] == [{**alice_row, "state": "idle", "field": None}]
        async with reading(bob.http, bob.events(branch)) as again:
            assert (await again.next("ready")).data["row_presence"] == snapshot["row_presence"]
        # Alice's tab leaves the branch: after the disconnect grace her row is empty.
        await alice_stream.close()
        assert await next_rows(stream) == []


async def test_row_presence_refusals(tabs: Any) -> None:
    world, t = await tabs()
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    phone, kettle = world.cases["phone"], world.cases["airport"]
    bob, carol = t["bob"], t["carol"]
    assert (await carol.spot(downtown, case_id=phone)).status_code == 204  # viewers view too
    assert_error(await bob.spot(airport, case_id=phone), 404, "not_found")  # not his branch
    assert_error(await t["alice"].spot(downtown, case_id=kettle), 404, "not_found")
    assert_error(await bob.spot(downtown, case_id=phone, where="here"), 422, "validation_error")
    assert_error(await bob.spot(downtown, case_id=phone, field="nope"), 422, "validation_error")
    assert_error(await bob.spot(downtown, case_id="1"), 422, "validation_error")
    assert_error(await bob.spot(downtown, case_id=phone, idle="yes"), 422, "validation_error")
    no_tab = await bob.http.put(
        f"/api/branches/{downtown}/row-presence",
        json={"case_id": phone},
        headers={"X-CSRF-Token": bob.headers["X-CSRF-Token"]},
    )
    assert_error(no_tab, 422, "validation_error")
    no_csrf = await bob.http.put(
        f"/api/branches/{downtown}/row-presence",
        json={"case_id": phone},
        headers={"X-Client-Id": "bob-tab"},
    )
    assert_error(no_csrf, 403, "csrf_failed")


async def test_release_hands_the_field_over_and_the_askers_tab_gets_its_token(
    tabs: Any,
) -> None:
    world, t = await tabs(lock_ttl="30")
    branch, phone = world.branches["downtown"], world.cases["phone"]
    alice, bob = t["alice"], t["bob"]
    async with (
        reading(alice.http, alice.events(branch)) as alice_stream,
        reading(bob.http, bob.events(branch)) as bob_stream,
    ):
        await alice_stream.next("ready")
        await bob_stream.next("ready")
        token = (await alice.lock(phone, "notes")).json()["lock"]["token"]
        await bob_stream.next("lock-acquired", skip=SKIP)
        asked = await bob.ask(phone, "notes")
        assert asked.status_code == 202, asked.text
        request = asked.json()["request"]
        assert request["holder"]["name"] == "Alice Johnson" and request["client_id"] is None
        assert request["asker"] == {"id": world.users["bob"], "name": "Bob Smith"}
        told = await alice_stream.next("lock-requested", skip=(*SKIP, "lock-acquired"))
        assert told.data["request"]["id"] == request["id"]
        assert told.data["request"]["client_id"] == "alice-tab"  # which of her tabs is asked
        seen = await bob_stream.next("lock-requested", skip=SKIP)
        assert seen.data["request"]["client_id"] is None
        # Alice's last text is saved first (the page flushes), then she releases.
        assert (await alice.patch(phone, {"notes": "Screen cracked"}, token)).status_code == 200
        assert_error(await bob.answer(request["id"], "release"), 403, "forbidden")
        released = await alice.answer(request["id"], "release")
        assert released.status_code == 200, released.text
        assert released.json()["request"]["answer"] == "released"
        gone = await bob_stream.next("lock-released", skip=(*SKIP, "case-updated"))
        assert gone.data["reason"] == "transferred"
        assert gone.data["to"] == {"id": world.users["bob"], "name": "Bob Smith"}
        acquired = await bob_stream.next("lock-acquired", skip=SKIP)
        assert acquired.data["lock"]["client_id"] == "bob-tab"  # his own copy: his tab
        answered = await bob_stream.next("lock-request-answered", skip=SKIP)
        assert answered.data["answer"] == "released"
        # Bob's tab learns its token by renewing the lock it now holds.
        renewed = await bob.lock(phone, "notes")
        assert renewed.status_code == 200
        bob_token = renewed.json()["lock"]["token"]
        assert bob_token != token
        assert (await bob.patch(phone, {"notes": "Screen replaced"}, bob_token)).status_code == 200
        assert_error(await alice.patch(phone, {"notes": "late"}, token), 423, "locked")
        assert_error(await alice.answer(request["id"], "keep"), 404, "not_found")


async def test_keep_tells_the_asker_and_the_refusals(tabs: Any) -> None:
    world, t = await tabs(lock_ttl="30")
    branch, phone = world.branches["downtown"], world.cases["phone"]
    alice, bob, carol, dave = t["alice"], t["bob"], t["carol"], t["dave"]
    async with reading(bob.http, bob.events(branch)) as bob_stream:
        await bob_stream.next("ready")
        # A free field is just taken.
        free = await bob.ask(phone, "product")
        assert free.status_code == 200 and free.json()["lock"]["token"]
        await alice.lock(phone, "notes")
        request = (await bob.ask(phone, "notes")).json()["request"]
        assert (await bob.ask(phone, "notes")).json()["request"]["id"] == request["id"]
        pending = assert_error(await dave.ask(phone, "notes"), 409, "lock_request_pending")
        assert pending["request"]["asker"]["name"] == "Bob Smith"
        assert_error(await carol.ask(phone, "notes"), 403, "forbidden")  # a viewer
        assert_error(await bob.ask(world.cases["airport"], "notes"), 404, "not_found")
        assert_error(await bob.ask(phone, "nope"), 422, "validation_error")
        assert_error(await alice.answer(request["id"], "maybe"), 422, "validation_error")
        assert_error(await alice.answer("no-such-request", "keep"), 404, "not_found")
        kept = await alice.answer(request["id"], "keep")
        assert kept.status_code == 200 and kept.json()["request"]["answer"] == "kept"
        answered = await bob_stream.next(
            "lock-request-answered", skip=(*SKIP, "lock-acquired", "lock-requested")
        )
        assert answered.data["answer"] == "kept"
        assert answered.data["request"]["id"] == request["id"]
        assert_error(await bob.lock(phone, "notes"), 423, "locked")


async def test_no_answer_passes_the_lock_once_the_holder_stops_typing(tabs: Any) -> None:
    world, t = await tabs(lock_ttl="30", lock_request_timeout="1.5")
    branch, phone = world.branches["downtown"], world.cases["phone"]
    alice, bob = t["alice"], t["bob"]
    async with (
        reading(alice.http, alice.events(branch)) as alice_stream,
        reading(bob.http, bob.events(branch)) as bob_stream,
    ):
        await alice_stream.next("ready")
        await bob_stream.next("ready")
        token = (await alice.lock(phone, "notes")).json()["lock"]["token"]
        assert (await bob.ask(phone, "notes")).status_code == 202
        loop = asyncio.get_running_loop()
        typed_until = loop.time() + 3.0
        while loop.time() < typed_until:  # saves keep coming: never interrupted
            response = await alice.patch(phone, {"notes": f"typing {loop.time():.2f}"}, token)
            assert response.status_code == 200, response.text
            last_save = loop.time()
            await asyncio.sleep(0.3)
        answered = await bob_stream.next(
            "lock-request-answered",
            skip=(*SKIP, "lock-acquired", "lock-requested", "case-updated", "lock-released"),
            timeout=10,
        )
        assert answered.data["answer"] == "timeout"
        # Not while she typed: only after about 1.5 s of quiet since her last save.
        assert loop.time() >= last_save + 1.0
        assert (await bob.lock(phone, "notes")).json()["lock"]["user"]["name"] == "Bob Smith"


async def test_a_holder_who_disconnects_while_asked_frees_the_field(tabs: Any) -> None:
    world, t = await tabs(lock_ttl="30", lock_request_timeout="20")
    branch, phone = world.branches["downtown"], world.cases["phone"]
    alice, bob = t["alice"], t["bob"]
    async with reading(bob.http, bob.events(branch)) as bob_stream:
        await bob_stream.next("ready")
        async with reading(alice.http, alice.events(branch)) as alice_stream:
            await alice_stream.next("ready")
            await alice.lock(phone, "notes")
            request = (await bob.ask(phone, "notes")).json()["request"]
            await alice_stream.next("lock-requested", skip=(*SKIP, "lock-acquired"))
        # Alice's tab is gone: after the disconnect grace her lock goes, and the request.
        released = await bob_stream.next(
            "lock-released", skip=(*SKIP, "lock-acquired", "lock-requested")
        )
        assert released.data["reason"] == "disconnected"
        answered = await bob_stream.next("lock-request-answered", skip=SKIP)
        assert answered.data == {**answered.data, "answer": "lock_gone"}
        assert answered.data["request"]["id"] == request["id"]
        assert_error(await alice.answer(request["id"], "release"), 404, "not_found")
        taken = await bob.ask(phone, "notes")
        assert taken.status_code == 200 and taken.json()["lock"]["user"]["name"] == "Bob Smith"


async def test_asking_is_rate_limited(tabs: Any) -> None:
    world, t = await tabs(lock_ttl="30", rate_limit_lock_requests="2/minute")
    phone = world.cases["phone"]
    alice, bob = t["alice"], t["bob"]
    await alice.lock(phone, "notes")
    assert (await bob.ask(phone, "notes")).status_code == 202
    assert (await bob.ask(phone, "notes")).status_code == 202
    refused = await bob.ask(phone, "notes")
    assert_error(refused, 429, "rate_limited")
    assert int(refused.headers["Retry-After"]) >= 1


async def test_lock_state_says_when_it_was_last_worked_on_and_ends(tabs: Any) -> None:
    world, t = await tabs()
    branch, phone = world.branches["downtown"], world.cases["phone"]
    alice, bob = t["alice"], t["bob"]
    async with reading(bob.http, bob.events(branch)) as bob_stream:
        await bob_stream.next("ready")
        first = (await alice.lock(phone, "notes")).json()["lock"]
        acquired = await bob_stream.next("lock-acquired", skip=SKIP)
        assert acquired.data["lock"]["active_at"] == first["active_at"]
        await asyncio.sleep(0.2)
        await alice.lock(phone, "notes")
        renewed = await bob_stream.next("lock-renewed", skip=("heartbeat", "presence"))
        assert renewed.data["lock"]["expires_at"] > first["expires_at"]
        assert renewed.data["lock"]["active_at"] == first["active_at"]  # renewing is not work
        assert renewed.data["lock"]["client_id"] is None
        # Not renewed again: it lapses, and everyone hears at once.
        released = await bob_stream.next("lock-released", skip=SKIP, timeout=10)
        assert released.data["reason"] == "expired"


# --- two nodes on one Redis ----------------------------------------------------------


@pytest.fixture(scope="module")
def nodes(
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Cluster]:
    with two_nodes(
        postgres_server,
        redis_server,
        tmp_path_factory.mktemp("where"),
        redis_db=7,
        lock_ttl="20",
        disconnect_grace="0.5",
    ) as running:
        yield running


@pytest.mark.cluster
@pytest.mark.redis
@pytest.mark.postgresql
async def test_a_holder_on_one_node_releases_to_an_asker_on_the_other(nodes: Cluster) -> None:
    a, b = nodes.nodes[:2]
    world = nodes.world
    branch, phone = world.branches["downtown"], world.cases["phone"]
    async with (
        user(a, "alice@example.com") as (alice_http, alice_h),
        user(b, "bob@example.com") as (bob_http, bob_h),
    ):
        alice = Tab(alice_http, alice_h, "alice-a")
        bob = Tab(bob_http, bob_h, "bob-b")
        async with (
            reading(alice.http, alice.events(branch)) as alice_stream,
            reading(bob.http, bob.events(branch)) as bob_stream,
        ):
            await alice_stream.next("ready")
            await bob_stream.next("ready")
            assert (await alice.spot(branch, case_id=phone)).status_code == 204
            rows = await next_rows(bob_stream)
            assert [r["user"]["name"] for r in rows] == ["Alice Johnson"]
            await alice.lock(phone, "notes")
            held = await bob_stream.next("lock-acquired", skip=SKIP)
            assert held.data["lock"]["user"]["name"] == "Alice Johnson"
            request = (await bob.ask(phone, "notes")).json()["request"]
            told = await alice_stream.next("lock-requested", skip=(*SKIP, "lock-acquired"))
            assert told.data["request"]["client_id"] == "alice-a"
            assert (await alice.answer(request["id"], "release")).status_code == 200
            acquired = await bob_stream.next(
                "lock-acquired", skip=(*SKIP, "lock-requested", "lock-released")
            )
            assert acquired.data["lock"]["user"]["name"] == "Bob Smith"
            assert acquired.data["lock"]["client_id"] == "bob-b"
            async with on(bob.http, a) as bob_on_a:
                renewed = await bob_on_a.put(f"/api/cases/{phone}/locks/notes", headers=bob.headers)
            assert renewed.status_code == 200 and renewed.json()["lock"]["token"]
            await bob.unlock(phone, "notes")
