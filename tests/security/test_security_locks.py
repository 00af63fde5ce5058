"""Lock abuse against a running server: floods, renewals without a stream,
retaking a lock a manager released, and borrowed client ids.

Each test starts its own ``warrantysync serve`` (``live_factory``) with the
timings it needs and attacks it over loopback, as a script would.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from attack import assert_error
from conftest import LiveFactory, login
from live import EventReader, LiveServer, reading
from warrantysync.services.fields import EDITABLE

DEFAULT_CAP = 5  # WARRANTYSYNC_MAX_LOCKS_PER_USER when unset


@dataclass
class Person:
    """One signed-in user; every call names the tab (client id) it claims to come from."""

    http: httpx.AsyncClient
    csrf: dict[str, str]

    def _headers(self, client_id: str | None) -> dict[str, str]:
        return self.csrf if client_id is None else {**self.csrf, "X-Client-Id": client_id}

    async def lock(self, case_id: int, field: str, client_id: str) -> httpx.Response:
        return await self.http.put(
            f"/api/cases/{case_id}/locks/{field}", headers=self._headers(client_id)
        )

    async def unlock(self, case_id: int, field: str, client_id: str | None) -> httpx.Response:
        return await self.http.delete(
            f"/api/cases/{case_id}/locks/{field}", headers=self._headers(client_id)
        )

    async def locks(self, branch_id: int) -> list[dict[str, Any]]:
        answer = await self.http.get(f"/api/branches/{branch_id}/cases")
        assert answer.status_code == 200, answer.text
        locks: list[dict[str, Any]] = answer.json()["locks"]
        return locks

    def stream(
        self, branch_id: int, client_id: str
    ) -> contextlib.AbstractAsyncContextManager[EventReader]:
        return reading(self.http, f"/api/branches/{branch_id}/events?client_id={client_id}")


@contextlib.asynccontextmanager
async def people(server: LiveServer, *names: str) -> AsyncIterator[list[Person]]:
    async with contextlib.AsyncExitStack() as stack:
        opened = []
        for name in names:
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.url, timeout=15)
            )
            opened.append(Person(http, await login(http, f"{name}@example.com")))
        yield opened


def _retry_after(answer: httpx.Response) -> int:
    value = int(answer.headers["retry-after"])
    assert value >= 1, value
    return value


async def _next_lock_event(reader: EventReader, kind: str) -> dict[str, Any]:
    item = await reader.next(kind, skip=("heartbeat", "presence", "lock-acquired", "lock-released"))
    data: dict[str, Any] = item.data
    return data


# --- defect: one editor locks everything ------------------------------------------


async def test_a_lock_flood_stops_at_the_per_user_cap(live_factory: LiveFactory) -> None:
    # A long grace: this test is about the cap, not about renewals without a stream.
    server, world = live_factory(disconnect_grace="60", lock_ttl="30")
    cases = [world.cases["phone"], world.cases["laptop"], world.cases["airport"]]
    targets = [(case, field) for case in cases for field in sorted(EDITABLE)]
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    async with people(server, "alice", "bob") as (alice, bob):
        # Every field of both of Alice's branches, from four "tabs", all at once.
        answers = await asyncio.gather(
            *(alice.lock(c, f, f"tab-{n % 4}") for n, (c, f) in enumerate(targets))
        )
        granted = [
            (target, a.json()["lock"])
            for target, a in zip(targets, answers, strict=True)
            if a.status_code == 200
        ]
        refused = [a for a in answers if a.status_code != 200]
        assert len(granted) == DEFAULT_CAP, [a.status_code for a in answers]
        for answer in refused:
            body = assert_error(answer, 429, "too_many_locks")
            assert body["limit"] == DEFAULT_CAP
            assert str(DEFAULT_CAP) in body["message"]
            assert 1 <= _retry_after(answer) <= 30
        # Nothing of the refused calls stuck: the snapshots hold exactly the granted locks.
        held = await alice.locks(downtown) + await alice.locks(airport)
        assert sorted((x["case_id"], x["field"]) for x in held) == sorted(t for t, _ in granted)

        # Renewing what she holds does not count twice (and keeps each token).
        for (case, field), lock in granted:
            again = await alice.lock(case, field, lock["client_id"])
            assert again.status_code == 200, again.text
            assert again.json()["lock"]["token"] == lock["token"]
        # Another user is not held back by her locks.
        free = next(t for t in targets if t not in {g for g, _ in granted} and t[0] != cases[2])
        assert (await bob.lock(*free, "bob-tab")).status_code == 200
        # Releasing one frees one slot, and only one.
        (case, field), lock = granted[0]
        assert (await alice.unlock(case, field, lock["client_id"])).status_code == 204
        rest = [t for t in targets if t not in {g for g, _ in granted} and t != free]
        assert (await alice.lock(*rest[0], "tab-0")).status_code == 200
        assert_error(await alice.lock(*rest[1], "tab-0"), 429, "too_many_locks")


# --- defect: renewals keep locks alive without anyone at the keyboard --------------


async def test_a_lock_without_a_stream_cannot_be_renewed_past_the_grace(
    live_factory: LiveFactory,
) -> None:
    server, world = live_factory(disconnect_grace="1", lock_ttl="3")
    phone, downtown = world.cases["phone"], world.branches["downtown"]
    async with (
        people(server, "alice", "dave") as (alice, dave),
        dave.stream(downtown, "watcher") as watcher,
    ):
        await watcher.next("ready")
        # A script with no stream takes a lock (allowed) and renews it within the grace.
        taken = await alice.lock(phone, "notes", "script")
        assert taken.status_code == 200, taken.text
        renewed = await alice.lock(phone, "notes", "script")
        assert renewed.status_code == 200, renewed.text
        lock = renewed.json()["lock"]
        await asyncio.sleep(1.3)
        refused = await alice.lock(phone, "notes", "script")
        body = assert_error(refused, 409, "stream_required")
        assert body["lock"]["expires_at"] == lock["expires_at"]  # not extended
        assert "token" not in body["lock"]
        [still] = await alice.locks(downtown)
        assert still["expires_at"] == lock["expires_at"]
        # So the lock ends at its TTL, whatever the script keeps sending.
        released = await _next_lock_event(watcher, "lock-released")
        assert (released["field"], released["reason"]) == ("notes", "expired")
        assert await alice.locks(downtown) == []

        # The same renewals from a tab with an open stream keep its lock.
        async with alice.stream(downtown, "tab-with-stream") as mine:
            await mine.next("ready")
            first = await alice.lock(phone, "issue", "tab-with-stream")
            assert first.status_code == 200, first.text
            await asyncio.sleep(1.3)
            again = await alice.lock(phone, "issue", "tab-with-stream")
            assert again.status_code == 200, again.text
            assert again.json()["lock"]["expires_at"] > first.json()["lock"]["expires_at"]
            assert again.json()["lock"]["token"] == first.json()["lock"]["token"]


# --- defect: a manager's forced release is retaken at once -------------------------


async def test_a_forced_release_bars_the_owner_from_that_field_for_a_while(
    live_factory: LiveFactory,
) -> None:
    cooldown = 4.0
    server, world = live_factory(forced_release_cooldown=str(cooldown), disconnect_grace="60")
    phone = world.cases["phone"]
    async with people(server, "alice", "bob", "dave") as (alice, bob, dave):
        assert (await alice.lock(phone, "notes", "tab-a")).status_code == 200
        assert (await dave.unlock(phone, "notes", None)).status_code == 204
        forced_at = time.monotonic()
        # Retaking it at once, from the same tab or another one, is refused...
        for tab in ("tab-a", "tab-b"):
            body = assert_error(await alice.lock(phone, "notes", tab), 423, "lock_barred")
            assert body["field"] == "notes"
            assert body["until"].endswith("Z")
            assert 1 <= _retry_after(await alice.lock(phone, "notes", tab)) <= cooldown
        # ...only that field: her other fields are hers to take...
        assert (await alice.lock(phone, "issue", "tab-a")).status_code == 200
        # ...and anyone else may take the field at once.
        assert (await bob.lock(phone, "notes", "bob-tab")).status_code == 200
        assert (await bob.unlock(phone, "notes", "bob-tab")).status_code == 204
        # After the cooldown she may take it again.
        deadline = forced_at + cooldown + 10
        while (answer := await alice.lock(phone, "notes", "tab-a")).status_code != 200:
            assert_error(answer, 423, "lock_barred")
            assert time.monotonic() < deadline, "still barred long after the cooldown"
            await asyncio.sleep(0.2)
        assert time.monotonic() - forced_at >= cooldown - 0.5
        # A manager releasing their own lock bars nobody.
        assert (await dave.lock(phone, "status", "dave-tab")).status_code == 200
        assert (await dave.unlock(phone, "status", None)).status_code == 204
        assert (await dave.lock(phone, "status", "dave-tab")).status_code == 200


# --- defect: other users' client ids are visible to every member -------------------


async def test_other_users_client_ids_are_not_shown(live_factory: LiveFactory) -> None:
    server, world = live_factory(disconnect_grace="60", lock_ttl="30")
    phone, downtown = world.cases["phone"], world.branches["downtown"]
    alice_id = world.users["alice"]
    async with (
        people(server, "alice", "bob", "carol") as (alice, bob, carol),
        alice.stream(downtown, "alice-tab") as alices,
        carol.stream(downtown, "carol-tab") as carols,
    ):
        await alices.next("ready")
        await carols.next("ready")
        assert (await alice.lock(phone, "notes", "alice-tab")).status_code == 200
        # Events: her own streams get her client id, everyone else's get null.
        assert (await _next_lock_event(alices, "lock-acquired"))["lock"]["client_id"] == "alice-tab"
        seen = (await _next_lock_event(carols, "lock-acquired"))["lock"]
        assert seen["user"]["id"] == alice_id and seen["client_id"] is None
        # Snapshots and `ready`: the same rule.
        [own] = await alice.locks(downtown)
        assert own["client_id"] == "alice-tab"
        for other in (bob, carol):
            [theirs] = await other.locks(downtown)
            assert theirs["client_id"] is None and theirs["user"]["id"] == alice_id
        async with bob.stream(downtown, "bob-tab") as bobs:
            ready = await bobs.next("ready")
            assert [x["client_id"] for x in ready.data["locks"]] == [None]
            # 423 and 403 bodies: the holder, without the client id.
            locked = assert_error(await bob.lock(phone, "notes", "bob-tab"), 423, "locked")
            assert locked["lock"]["user"]["id"] == alice_id
            assert locked["lock"]["client_id"] is None
            forbidden = assert_error(await bob.unlock(phone, "notes", "bob-tab"), 403, "forbidden")
            assert forbidden["lock"]["client_id"] is None
            # Her own other tab is told which of her tabs holds it.
            mine = assert_error(await alice.lock(phone, "notes", "alice-tab-2"), 423, "locked")
            assert mine["lock"]["client_id"] == "alice-tab"
            assert (await alice.unlock(phone, "notes", "alice-tab")).status_code == 204
            released = await _next_lock_event(bobs, "lock-released")
            assert released["client_id"] is None and released["reason"] == "released"
        assert (await _next_lock_event(alices, "lock-released"))["client_id"] == "alice-tab"
        assert (await _next_lock_event(carols, "lock-released"))["client_id"] is None
        assert "alice-tab" not in repr(await carols.drain(quiet=0.3))


async def test_a_borrowed_client_id_owns_nothing_of_its_owner(live_factory: LiveFactory) -> None:
    server, world = live_factory(disconnect_grace="60", lock_ttl="30")
    phone, downtown = world.cases["phone"], world.branches["downtown"]
    async with (
        people(server, "alice", "bob") as (alice, bob),
        alice.stream(downtown, "alice-tab") as alices,
    ):
        await alices.next("ready")
        held = (await alice.lock(phone, "notes", "alice-tab")).json()["lock"]
        # Bob claims Alice's tab id: he neither holds her lock nor may release or renew it...
        assert_error(await bob.lock(phone, "notes", "alice-tab"), 423, "locked")
        assert_error(await bob.unlock(phone, "notes", "alice-tab"), 403, "forbidden")
        patched = await bob.http.patch(
            f"/api/cases/{phone}",
            json={"changes": {"notes": "bob"}},
            headers={**bob.csrf, "X-Client-Id": "alice-tab"},
        )
        assert_error(patched, 423, "locked")
        # ...and a lock he takes under it is his: Alice's stream says so.
        assert (await bob.lock(phone, "product", "alice-tab")).status_code == 200
        event = None
        while event is None or event["lock"]["field"] != "product":
            event = await _next_lock_event(alices, "lock-acquired")
        assert event["lock"]["user"]["id"] == world.users["bob"]
        assert event["lock"]["client_id"] is None
        [notes] = [x for x in await alice.locks(downtown) if x["field"] == "notes"]
        assert notes["client_id"] == "alice-tab" and notes["expires_at"] == held["expires_at"]
