"""Imported cases reach open streams, through a real server (docs/operations.md, "Importing cases").

From the browser's import (the server publishes each batch), from the CLI
with Redis (it publishes each batch there), and from the CLI without Redis
(the server finds them in the outbox at the next change): one
``case-created`` per case, in id order, no gap.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from subprocess import PIPE

import httpx
import pytest

from conftest import LiveFactory, login
from factories import World
from live import EventReader, LiveServer, reading
from servers import RedisServer

ROWS = 1200  # three batches
CSV = {"Content-Type": "text/csv"}


def body() -> bytes:
    return (
        "customer_name,product\n" + "".join(f"Imported {n},Kettle\n" for n in range(ROWS))
    ).encode()


@pytest.fixture
async def dave() -> AsyncIterator[list[httpx.AsyncClient]]:
    opened: list[httpx.AsyncClient] = []
    yield opened
    for http in opened:
        await http.aclose()


async def signed_in(server: LiveServer, opened: list[httpx.AsyncClient]) -> httpx.AsyncClient:
    http = httpx.AsyncClient(base_url=server.url, timeout=60)
    opened.append(http)
    http.headers.update(await login(http, "dave@example.com"))
    return http


async def created(events: EventReader, count: int, after: int) -> list[int]:
    """The next ``count`` case-created ids; each follows the one before."""
    ids = []
    for _ in range(count):
        event = await events.next("case-created", timeout=30)
        ids.append(int(event.id))
        assert event.data["case"]["customer_name"].startswith("Imported ")
    assert ids == list(range(after + 1, after + count + 1))
    return ids


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "cases.csv"
    path.write_bytes(body())
    return path


async def cli_import(server: LiveServer, branch_id: int, path: Path, redis_url: str | None) -> str:
    """``warrantysync cases import`` as an operator runs it, beside the server."""
    env = {**os.environ, **server.env}
    env.pop("WARRANTYSYNC_REDIS_URL", None)
    if redis_url is not None:
        env["WARRANTYSYNC_REDIS_URL"] = redis_url
    args = ["-m", "warrantysync", "cases", "import", "--branch", str(branch_id), str(path)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out + err).decode()
    return out.decode()


async def test_an_import_from_the_page_reaches_every_open_stream(
    live: tuple[LiveServer, World], dave: list[httpx.AsyncClient]
) -> None:
    server, world = live
    downtown = world.branches["downtown"]
    http = await signed_in(server, dave)
    async with reading(http, f"/api/branches/{downtown}/events?client_id=watch") as events:
        ready = await events.next("ready")
        head = int(ready.data["last_event_id"])
        answer = await http.post(
            f"/api/branches/{downtown}/cases/import", content=body(), headers=CSV
        )
        assert answer.status_code == 200, answer.text
        await created(events, ROWS, head)


async def test_a_cli_import_reaches_the_streams_through_redis(
    live_factory: LiveFactory,
    redis_server: RedisServer,
    dave: list[httpx.AsyncClient],
    csv_file: Path,
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + "/6"
    server, world = live_factory(redis_url=url)
    downtown = world.branches["downtown"]
    http = await signed_in(server, dave)
    async with reading(http, f"/api/branches/{downtown}/events?client_id=watch") as events:
        head = int((await events.next("ready")).data["last_event_id"])
        assert f"imported {ROWS:,} cases" in await cli_import(server, downtown, csv_file, url)
        await created(events, ROWS, head)


async def test_without_redis_the_server_finds_a_cli_import_in_the_outbox(
    live: tuple[LiveServer, World], dave: list[httpx.AsyncClient], csv_file: Path
) -> None:
    server, world = live
    downtown = world.branches["downtown"]
    http = await signed_in(server, dave)
    async with reading(http, f"/api/branches/{downtown}/events?client_id=watch") as events:
        head = int((await events.next("ready")).data["last_event_id"])
        await cli_import(server, downtown, csv_file, None)
        # The next change on the server shows it a gap: it reads the import from the outbox.
        answer = await http.post(f"/api/branches/{downtown}/cases", json={"customer_name": "After"})
        assert answer.status_code == 201, answer.text
        await created(events, ROWS, head)
        after = await events.next("case-created", timeout=30)
        assert (int(after.id), after.data["case"]["customer_name"]) == (head + ROWS + 1, "After")
