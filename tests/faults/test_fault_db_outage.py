"""The database goes away in every way an operator meets it.

Stopped (connection refused), restarted while a save waits inside its
transaction, frozen (SIGSTOP), a host name that does not resolve, a wrong
password — on a real PostgreSQL, and stopped on a real MariaDB. Each time
every endpoint (PATCH, GET case, snapshot, history, login, ``/api/me``, lock
PUT, stream open, the pages) answers 503 ``unavailable`` with
``Retry-After`` — a browser asking for a page gets a small HTML page — and
never 500 or a dropped connection; a stream opened before the outage stays
open on its heartbeats; the server logs one line per failure, no
traceback; and once the database is back every endpoint answers again
within 2 s, while a save cut off by the outage, retried with its
``Idempotency-Key``, is applied exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster import seeded_postgres
from conftest import DURABLE_PASSWORD, LIVE_ENV
from factories import PASSWORD, World
from live import EventReader, LiveServer, reading
from servers import MariaDBServer, PostgresServer

DB_TIMEOUT = 2.0
RECOVERY = 2.0  # seconds from the database answering again to every endpoint answering
JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@dataclass
class Node:
    server: LiveServer
    world: World
    url: str  # the database's


def _start(url: str, world: World, log: Path) -> Node:
    env = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url, "WARRANTYSYNC_DATABASE_TIMEOUT": "2"}
    return Node(LiveServer(env=env, log_path=log).start(), world, url)


@pytest.fixture
def on_postgres(durable_postgres: PostgresServer, tmp_path: Path) -> Iterator[Node]:
    url, world = seeded_postgres(durable_postgres, f"outage_{secrets.token_hex(4)}")
    node = _start(url, world, tmp_path / "server.log")
    try:
        yield node
    finally:
        durable_postgres.resume()
        if durable_postgres.pid is None:
            durable_postgres.up()
        node.server.kill()


@pytest.fixture
def on_mariadb(spare_mariadb: MariaDBServer, tmp_path: Path) -> Iterator[Node]:
    url, world = seeded_postgres(spare_mariadb, f"outage_{secrets.token_hex(4)}")  # type: ignore[arg-type]
    node = _start(url, world, tmp_path / "server.log")
    try:
        yield node
    finally:
        if spare_mariadb.pid is None:
            spare_mariadb.up()
        node.server.kill()


@asynccontextmanager
async def signed_in(node: Node) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A cookie session of Alice's (taken while the database is up) and its CSRF token."""
    async with httpx.AsyncClient(base_url=node.server.url, timeout=30) as http:
        response = await http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        assert response.status_code == 200, response.text
        yield http, response.json()["csrf_token"]


def _endpoints(world: World, csrf: str) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every kind of request a user makes: name → (method, path, httpx arguments)."""
    case, branch = world.cases["phone"], world.branches["downtown"]
    write = {"X-CSRF-Token": csrf, "X-Client-Id": "sweep", **JSON}
    return {
        "PATCH": ("PATCH", f"/api/cases/{case}", {"json": {"changes": {}}, "headers": write}),
        "GET case": ("GET", f"/api/cases/{case}", {"headers": JSON}),
        "snapshot": ("GET", f"/api/branches/{branch}/cases", {"headers": JSON}),
        "history": ("GET", f"/api/cases/{case}/history", {"headers": JSON}),
        "me": ("GET", "/api/me", {"headers": JSON}),
        "lock PUT": ("PUT", f"/api/cases/{case}/locks/product", {"headers": write}),
        "stream": (
            "GET",
            f"/api/branches/{branch}/events?client_id=sweep",
            {"headers": {"Accept": "text/event-stream"}},
        ),
        "page /": ("GET", "/", {"headers": HTML}),
        "page /branch": ("GET", f"/branch/{branch}", {"headers": HTML}),
        "page /login": ("GET", "/login", {"headers": HTML}),
        "page / as JSON": ("GET", "/", {"headers": JSON}),
    }


LOGIN = {"json": {"email": "bob@example.com", "password": PASSWORD}, "headers": JSON}


async def _call(http: httpx.AsyncClient, method: str, path: str, args: dict[str, Any]) -> Any:
    """(status, headers, body) of one request; a stream is read only up to its headers."""
    async with http.stream(method, path, **args) as response:
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            return response.status_code, response.headers, ""
        await response.aread()
        return response.status_code, response.headers, response.text


async def sweep(http: httpx.AsyncClient, world: World, csrf: str) -> dict[str, Any]:
    """Every endpoint at once; raises if any connection is dropped."""
    endpoints = _endpoints(world, csrf)
    # Logging in from a client of its own, so its cookie does not replace ours.
    async with httpx.AsyncClient(base_url=http.base_url, timeout=30) as anonymous:
        answers = await asyncio.gather(
            *(_call(http, *spec) for spec in endpoints.values()),
            _call(anonymous, "POST", "/api/auth/login", LOGIN),
        )
    return dict(zip([*endpoints, "login"], answers, strict=True))


def assert_all_unavailable(answers: dict[str, Any]) -> None:
    for name, (status, headers, body) in answers.items():
        assert status == 503, f"{name}: {status} {body[:300]}"
        assert int(headers["retry-after"]) >= 1, name
        if headers["content-type"].startswith("text/html"):
            assert name.startswith("page") and "as JSON" not in name, name
            assert "Temporarily unavailable" in body, name
            assert "<script" not in body, name
        else:
            assert not name.startswith("page /") or "as JSON" in name, f"{name}: not HTML"
            assert '"error":"unavailable"' in body.replace(" ", ""), f"{name}: {body}"


async def assert_recovers(http: httpx.AsyncClient, world: World, csrf: str) -> float:
    """Seconds until every endpoint answers below 500 again (at most RECOVERY)."""
    started = time.monotonic()
    while True:
        answers = await sweep(http, world, csrf)
        failing = {name: a[0] for name, a in answers.items() if a[0] >= 500}
        took = time.monotonic() - started
        if not failing:
            return took
        assert took <= RECOVERY, f"still failing {took:.1f}s after the database returned: {failing}"
        await asyncio.sleep(0.1)


# The browser reconnects when no heartbeat came for 2 intervals + 5 s (connection.js).
WATCHDOG = 2 * float(LIVE_ENV["WARRANTYSYNC_HEARTBEAT_INTERVAL"]) + 5


async def heartbeats(reader: EventReader, count: int) -> None:
    """``count`` heartbeats, each before a browser's watchdog would give up."""
    for _ in range(count):
        await reader.next("heartbeat", timeout=WATCHDOG, skip=("presence",))


def assert_quiet_log(node: Node) -> None:
    log = node.server.log()
    assert "Traceback" not in log, log[-3000:]
    assert " 500 " not in log, log[-3000:]
    assert "database unavailable:" in log


async def outage_then_recovery(
    node: Node, down: Callable[[], None], up: Callable[[], None]
) -> None:
    """The common story: a stream open, the database away, every endpoint 503, back."""
    world = node.world
    branch = world.branches["downtown"]
    async with (
        signed_in(node) as (http, csrf),
        reading(http, f"/api/branches/{branch}/events?client_id=watcher") as stream,
    ):
        await stream.next("ready")
        await asyncio.to_thread(down)
        try:
            assert_all_unavailable(await sweep(http, world, csrf))
            await heartbeats(stream, 3)  # the stream opened before stays open
        finally:
            await asyncio.to_thread(up)
        took = await assert_recovers(http, world, csrf)
        case = world.cases["phone"]
        saved = await http.patch(
            f"/api/cases/{case}",
            json={"changes": {"notes": "after the outage"}},
            headers={"X-CSRF-Token": csrf},
        )
        assert saved.status_code == 200, saved.text
        seen = await stream.next(
            "case-updated",
            timeout=10,
            skip=("heartbeat", "presence", "lock-acquired", "lock-released"),
        )
        assert seen.data["changes"] == {"notes": "after the outage"}
    assert_quiet_log(node)
    print(f"\nrecovered {took:.2f}s after the database answered again")


pytestmark = pytest.mark.postgresql


async def test_postgresql_stopped(on_postgres: Node, durable_postgres: PostgresServer) -> None:
    await outage_then_recovery(on_postgres, durable_postgres.down, durable_postgres.up)


async def test_postgresql_frozen(on_postgres: Node, durable_postgres: PostgresServer) -> None:
    await outage_then_recovery(on_postgres, durable_postgres.pause, durable_postgres.resume)


@pytest.mark.mysql
async def test_mariadb_stopped(on_mariadb: Node, spare_mariadb: MariaDBServer) -> None:
    await outage_then_recovery(on_mariadb, spare_mariadb.down, spare_mariadb.up)


async def test_postgresql_restarted_while_a_save_waits_in_its_transaction(
    on_postgres: Node, durable_postgres: PostgresServer
) -> None:
    import asyncpg

    node, world = on_postgres, on_postgres.world
    case = world.cases["phone"]
    database = node.url.rsplit("/", 1)[1]
    async with signed_in(node) as (http, csrf):
        before = (await http.get(f"/api/cases/{case}")).json()
        headers = {"X-CSRF-Token": csrf, "Idempotency-Key": "cut-off"}
        body = {"changes": {"notes": "cut off"}, "expected": {"notes": before["notes"]}}
        # Hold the case's row so the save waits inside its transaction.
        holder = await asyncpg.connect(
            host="127.0.0.1",
            port=durable_postgres.port,
            user="postgres",
            password=DURABLE_PASSWORD,
            database=database,
        )
        try:
            lock = holder.transaction()
            await lock.start()
            await holder.execute("SELECT id FROM warranty_cases WHERE id = $1 FOR UPDATE", case)
            save = asyncio.ensure_future(
                http.patch(f"/api/cases/{case}", json=body, headers=headers)
            )
            await _until_waiting_on_a_lock(holder)
            await asyncio.to_thread(durable_postgres.down)
            cut = await save
        finally:
            holder.terminate()
            if durable_postgres.pid is None:
                await asyncio.to_thread(durable_postgres.up)
        assert cut.status_code == 503, cut.text
        assert cut.json()["error"] == "unavailable"
        assert int(cut.headers["retry-after"]) >= 1

        async def retried() -> httpx.Response:
            deadline = time.monotonic() + RECOVERY
            while True:
                response = await http.patch(f"/api/cases/{case}", json=body, headers=headers)
                if response.status_code != 503 or time.monotonic() > deadline:
                    return response
                await asyncio.sleep(0.1)

        first, again = await retried(), await retried()
        assert first.status_code == 200, first.text
        assert first.json()["version"] == before["version"] + 1
        assert again.json() == first.json()  # the key's first answer, nothing changed
        history = (await http.get(f"/api/cases/{case}/history")).json()
        assert [h["new"] for h in history if h["field"] == "notes"].count("cut off") == 1
    assert_quiet_log(node)


async def _until_waiting_on_a_lock(holder: Any) -> None:
    for _ in range(200):
        waiting = await holder.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND datname = current_database()"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the save never waited on the row lock")


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(lambda url: url.replace("127.0.0.1", "db.invalid"), id="unresolvable-host"),
        pytest.param(
            lambda url: url.replace(DURABLE_PASSWORD, "wrong-password"), id="wrong-password"
        ),
    ],
)
async def test_postgresql_unreachable_from_the_start(
    broken: Callable[[str], str],
    durable_postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    name = f"outage_{secrets.token_hex(4)}"
    url, world = await asyncio.to_thread(seeded_postgres, durable_postgres, name)
    good = _start(url, world, tmp_path / "good.log")
    try:
        async with signed_in(good) as (http, _csrf):
            cookie = http.cookies["warrantysync_session"]
    finally:
        good.server.kill()
    node = _start(broken(url), world, tmp_path / "server.log")
    try:
        async with httpx.AsyncClient(
            base_url=node.server.url, cookies={"warrantysync_session": cookie}, timeout=30
        ) as http:
            assert_all_unavailable(await sweep(http, world, "any-csrf"))
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"].startswith("unavailable")
        assert_quiet_log(node)
    finally:
        node.server.kill()


@pytest.mark.browser
async def test_a_page_loaded_during_the_outage_retries_by_itself_in_chromium(
    on_postgres: Node, durable_postgres: PostgresServer
) -> None:
    """The real CSP, no bypass: the 503 page shows, then reloads into the table."""
    from playwright.async_api import async_playwright, expect

    from chromium import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    node, branch = on_postgres, on_postgres.world.branches["downtown"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await (await browser.new_context()).new_page()
            console: list[str] = []
            page.on("console", lambda message: console.append(message.text))
            await page.goto(f"{node.server.url}/login")
            await page.locator("input[name=email]").fill("alice@example.com")
            await page.locator("input[name=password]").fill(PASSWORD)
            await page.locator("button[type=submit]").click()
            await page.wait_for_url(f"{node.server.url}/")
            await asyncio.to_thread(durable_postgres.down)
            try:
                answer = await page.goto(f"{node.server.url}/branch/{branch}")
                assert answer is not None and answer.status == 503
                await expect(page.locator("h1")).to_have_text("Temporarily unavailable")
            finally:
                await asyncio.to_thread(durable_postgres.up)
            # Nobody touches the page: its refresh brings the table once the database is back.
            await expect(page.locator("tr[data-case-id]").first).to_be_visible(timeout=15_000)
            assert not [text for text in console if "Content Security Policy" in text], console
        finally:
            await browser.close()
