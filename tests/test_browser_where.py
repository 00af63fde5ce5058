"""Who is where, in a real Chromium with two people (docs/protocol.md, "Browser page: DOM hooks").

One server and one pair of windows (Alice, Bob) for the whole module: the
behaviours run in sequence, each leaving no lock behind. The request
timeout is shortened to 3 s so the "no answer" case takes seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from chromium import CHROMIUM, CHROMIUM_ARGS
from conftest import LIVE_ENV, seeded_sqlite
from factories import PASSWORD, World
from live import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

WAIT_MS = 10_000
VIEWPORT = {"width": 1366, "height": 768}
TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, migrated_template: Path
) -> Iterator[tuple[LiveServer, World]]:
    where = tmp_path_factory.mktemp("where-browser")
    url, world = seeded_sqlite(where, migrated_template)
    env = {
        **LIVE_ENV,
        "WARRANTYSYNC_DATABASE_URL": url,
        "WARRANTYSYNC_LOCK_TTL": "30",
        "WARRANTYSYNC_LOCK_REQUEST_TIMEOUT": str(TIMEOUT_S),
    }
    live = LiveServer(env=env, log_path=where / "server.log").start()
    try:
        yield live, world
    finally:
        live.kill()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} missing -- `make test` installs it with apt-get")
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class Person:
    def __init__(self, page: Page, errors: list[str]) -> None:
        self.page = page
        self.errors = errors

    def row(self, case_id: int) -> Locator:
        return self.page.locator(f'tr[data-case-id="{case_id}"]')

    def cell(self, case_id: int, field: str) -> Locator:
        return self.row(case_id).locator(f'[data-field="{field}"]')

    def control(self, case_id: int, field: str) -> Locator:
        return self.cell(case_id, field).locator("[data-control]")

    async def click_away(self) -> None:
        await self.page.locator(".branch-name").click()


async def sign_in(browser: Browser, live: LiveServer, world: World, email: str) -> Person:
    context = await browser.new_context(viewport=VIEWPORT, bypass_csp=True)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    branch = world.branches["downtown"]
    await page.goto(f"{live.url}/branch/{branch}")
    await page.locator("input[name=email]").fill(email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("button[type=submit]").click()
    await page.wait_for_url(f"**/branch/{branch}")
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "connected")
    return Person(page, errors)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(
    browser: Browser, server: tuple[LiveServer, World]
) -> AsyncIterator[tuple[Person, Person]]:
    live, world = server
    # The machine running CI may be slow: every expectation here waits up to WAIT_MS.
    expect.set_options(timeout=WAIT_MS)
    alice, bob = await asyncio.gather(
        sign_in(browser, live, world, "alice@example.com"),
        sign_in(browser, live, world, "bob@example.com"),
    )
    yield alice, bob
    for person in (alice, bob):
        with contextlib.suppress(Exception):
            await person.page.context.close()
    expect.set_options(timeout=5_000)  # Playwright's default, for the modules after this one
    errors = alice.errors + bob.errors
    assert not errors, f"uncaught errors in the page: {errors}"


async def server_value(live: LiveServer, case_id: int, field: str) -> object:
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as http:
        login = {"email": "dave@example.com", "password": PASSWORD}
        assert (await http.post("/api/auth/login", json=login)).status_code == 200
        return (await http.get(f"/api/cases/{case_id}")).json()[field]


async def test_1_bob_sees_alices_avatar_on_the_row_she_has_open(
    pair: tuple[Person, Person], server: tuple[LiveServer, World]
) -> None:
    alice, bob = pair
    phone = server[1].cases["phone"]
    await alice.row(phone).locator(".case-link").click()  # opens the side panel
    avatar = bob.row(phone).locator('[data-presence-user="Alice Johnson"]')
    await expect(avatar).to_have_attribute("data-presence-state", "viewing")
    await expect(avatar).to_have_text("AJ Alice Johnson is viewing")
    # Bob opens the same case: the panel says who is there; Alice's row shows Bob.
    await bob.row(phone).locator(".case-link").click()
    await expect(bob.page.locator("#panel-presence")).to_contain_text("Alice Johnson is viewing")
    await expect(alice.row(phone).locator('[data-presence-user="Bob Smith"]')).to_have_attribute(
        "data-presence-state", "viewing"
    )
    # Alice starts editing Notes: she is "editing" there, with the field named.
    await alice.page.locator("#panel-notes").click()
    await expect(avatar).to_have_attribute("data-presence-state", "editing")
    await expect(bob.page.locator("#panel-presence")).to_contain_text(
        "Alice Johnson is editing Notes"
    )
    await alice.page.keyboard.press("Escape")
    await alice.page.locator("#side-panel .panel-close").click()
    await bob.page.locator("#side-panel .panel-close").click()


async def test_2_bob_asks_alice_releases_her_text_is_saved_and_his_cell_opens(
    pair: tuple[Person, Person], server: tuple[LiveServer, World]
) -> None:
    alice, bob = pair
    live, world = server
    phone = world.cases["phone"]
    await alice.control(phone, "issue").click()
    await alice.page.keyboard.type("Screen cracked in the corner", delay=10)
    cell = bob.cell(phone, "issue")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson")
    await cell.hover()
    await cell.locator('[data-action="ask-release"]').click()
    notice = alice.page.locator("#lock-requests .lock-request")
    await expect(notice).to_contain_text("Bob Smith asks for Issue")
    await notice.locator('[data-action="release"]').click()
    await expect(notice).to_have_count(0)
    # Bob's cell opens for editing; what Alice typed is on the server and on his screen.
    await expect(bob.control(phone, "issue")).to_be_focused()
    await expect(bob.control(phone, "issue")).to_have_value("Screen cracked in the corner")
    assert await server_value(live, phone, "issue") == "Screen cracked in the corner"
    await expect(alice.cell(phone, "issue")).to_have_attribute("data-locked-by", "Bob Smith")
    await expect(bob.page.locator("#toasts")).to_contain_text("Alice Johnson released Issue")
    await bob.page.keyboard.press("End")
    await bob.page.keyboard.type("; replaced", delay=10)
    await bob.click_away()
    await expect(alice.control(phone, "issue")).to_have_value(
        "Screen cracked in the corner; replaced"
    )
    await alice.click_away()


async def test_3_alice_keeps_editing_and_bob_is_told(
    pair: tuple[Person, Person], server: tuple[LiveServer, World]
) -> None:
    alice, bob = pair
    laptop = server[1].cases["laptop"]
    await alice.control(laptop, "customer_name").click()
    cell = bob.cell(laptop, "customer_name")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson")
    # The keyboard way: Enter on the locked cell offers to ask.
    await cell.focus()
    await bob.page.keyboard.press("Enter")
    offer = bob.page.locator("#toasts .toast-action", has_text="Ask Alice Johnson for this field")
    await offer.click()
    notice = alice.page.locator("#lock-requests .lock-request")
    await notice.locator('[data-action="keep"]').click()
    await expect(bob.page.locator("#toasts")).to_contain_text("Alice Johnson is still editing")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson")
    await expect(alice.control(laptop, "customer_name")).to_be_focused()
    await alice.click_away()
    await expect(bob.control(laptop, "customer_name")).to_be_enabled()


async def test_4_alice_idle_bob_gets_it_after_the_timeout(
    pair: tuple[Person, Person], server: tuple[LiveServer, World]
) -> None:
    alice, bob = pair
    live, world = server
    laptop = world.cases["laptop"]
    await alice.control(laptop, "product").click()
    await alice.page.keyboard.press("Control+A")
    await alice.page.keyboard.type("XPS 15", delay=10)
    cell = bob.cell(laptop, "product")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson")
    # The 🔒 tooltip says how long the lock has been idle and when it ends.
    await expect(cell).to_have_attribute("title", re.compile(r"idle \d+ s · ends"))
    await cell.hover()
    await cell.locator('[data-action="ask-release"]').click()
    await expect(alice.page.locator("#lock-requests .lock-request")).to_have_count(1)
    # Nobody answers; Alice does not type: after the timeout the field is Bob's.
    await expect(bob.control(laptop, "product")).to_be_focused(timeout=(TIMEOUT_S + 10) * 1000)
    await expect(alice.page.locator("#lock-requests .lock-request")).to_have_count(0)
    assert await server_value(live, laptop, "product") == "XPS 15"
    await expect(alice.page.locator("#toasts")).to_contain_text("Bob Smith")
    await bob.click_away()
