"""The event stream through a real uvicorn server (DESIGN §4)."""

from __future__ import annotations

import httpx

from conftest import login
from factories import World
from live import LiveServer, reading


async def test_edit_by_one_user_reaches_the_other(live: tuple[LiveServer, World]) -> None:
    server, world = live
    branch, case = world.branches["downtown"], world.cases["phone"]
    async with (
        httpx.AsyncClient(base_url=server.url) as alice,
        httpx.AsyncClient(base_url=server.url) as bob,
    ):
        alice_h = await login(alice, "alice@example.com")
        await login(bob, "bob@example.com")
        async with reading(bob, f"/api/branches/{branch}/events?client_id=bobtab") as stream:
            ready = await stream.next("ready")
            assert ready.data["client_id"] == "bobtab"
            response = await alice.patch(
                f"/api/cases/{case}",
                json={"changes": {"customer_name": "Jane Roe"}},
                headers={**alice_h, "X-Client-Id": "alicetab"},
            )
            assert response.status_code == 200
            event = await stream.next("case-updated")
            assert event.data["changes"] == {"customer_name": "Jane Roe"}
            assert event.data["by"]["name"] == "Alice Johnson"
            assert event.data["client_id"] == "alicetab"
            assert int(event.id) == int(ready.id) + 1
