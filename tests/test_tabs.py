"""Tabs under one browser connection, through a real server.

The contract: docs/protocol.md, "Tabs sharing one stream".

A stream opened with ``client_id=<connection>`` carries every tab
``<connection>.<tab>``: their locks renew, a tab's locks can be released at
once, and all of them go when the stream is gone for good. Clients with one
stream per tab (a plain client id) work as before.
"""

from __future__ import annotations

import asyncio
import re

import httpx

from conftest import login
from factories import World
from live import LiveServer, reading


async def _lock(
    http: httpx.AsyncClient, csrf: dict[str, str], case_id: int, field: str, client_id: str
) -> httpx.Response:
    headers = {**csrf, "X-Client-Id": client_id}
    return await http.put(f"/api/cases/{case_id}/locks/{field}", headers=headers)


# Events beside the ones a test waits for (docs/protocol.md, "The event stream").
QUIET = ("heartbeat", "presence", "lock-renewed", "row-presence")


async def test_a_browser_stream_carries_its_tabs(live: tuple[LiveServer, World]) -> None:
    server, world = live
    branch, phone = world.branches["downtown"], world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as alice,
        httpx.AsyncClient(base_url=server.url, timeout=10) as bob,
    ):
        csrf = await login(alice, "alice@example.com")
        bob_csrf = await login(bob, "bob@example.com")
        async with reading(bob, f"/api/branches/{branch}/events?client_id=bob-watch") as watch:
            await watch.next("ready")
            async with reading(alice, f"/api/branches/{branch}/events?client_id=br0wser") as stream:
                ready = await stream.next("ready")
                assert ready.data["client_id"] == "br0wser"
                assert re.fullmatch(r"\d+\.\d+\.\d+\+[0-9a-f]{12}", ready.data["version"])
                page = (await alice.get(f"/branch/{branch}")).text
                assert f'"version":"{ready.data["version"]}"' in page.replace(" ", "")

                for field, tab in (("notes", "br0wser.t1"), ("product", "br0wser.t2")):
                    assert (await _lock(alice, csrf, phone, field, tab)).status_code == 200
                # Past the renew grace (0.5 s) a renewal needs a stream: the browser's counts.
                await asyncio.sleep(1.0)
                assert (await _lock(alice, csrf, phone, "notes", "br0wser.t1")).status_code == 200

                # Another user cannot release Alice's tab; Alice can, one tab at once.
                path = f"/api/branches/{branch}/clients/br0wser.t1/locks"
                assert (await bob.delete(path, headers=bob_csrf)).status_code == 204
                assert (await alice.delete(path)).status_code == 403  # no CSRF token
                assert (await alice.delete(path, headers=csrf)).status_code == 204
                released = await watch.next("lock-released", skip=(*QUIET, "lock-acquired"))
                assert (released.data["field"], released.data["reason"]) == ("notes", "released")
                assert released.data["client_id"] is None  # another user's tab id stays hidden
                bad = await alice.delete(f"/api/branches/{branch}/clients/a..b/locks", headers=csrf)
                assert bad.status_code == 422 and bad.json()["field"] == "client_id"
                snapshot = (await bob.get(f"/api/branches/{branch}/cases")).json()
                assert [lock["field"] for lock in snapshot["locks"]] == ["product"]
                viewers = {v["user"]["name"]: v["clients"] for v in snapshot["presence"]}
                assert viewers["Alice Johnson"] == 1
            # The browser's stream closed: after the grace every tab under it lets go.
            released = await watch.next("lock-released", skip=QUIET)
            assert (released.data["field"], released.data["reason"]) == ("product", "disconnected")


async def test_a_stream_per_tab_works_as_before(live: tuple[LiveServer, World]) -> None:
    server, world = live
    branch, phone = world.branches["downtown"], world.cases["phone"]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as alice:
        csrf = await login(alice, "alice@example.com")
        async with reading(alice, f"/api/branches/{branch}/events?client_id=old-tab") as stream:
            assert (await stream.next("ready")).data["client_id"] == "old-tab"
            assert (await _lock(alice, csrf, phone, "notes", "old-tab")).status_code == 200
            await asyncio.sleep(1.0)
            assert (await _lock(alice, csrf, phone, "notes", "old-tab")).status_code == 200
            # A tab id under a connection that has no stream is not attending.
            assert (await _lock(alice, csrf, phone, "product", "gone.t1")).status_code == 200
            await asyncio.sleep(1.0)
            refused = await _lock(alice, csrf, phone, "product", "gone.t1")
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"] == "stream_required"
