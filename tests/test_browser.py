"""The browser client in a real Chromium (docs/architecture.md, "The browser client").

Each test starts its own server (``live_factory``), opens one browser context
per user, signs in through the real /login form and drives the branch page the
way a person would. One Chromium is launched per module; contexts are closed by
the ``windows`` fixture. Contexts bypass the page's CSP only so that
``wait_for_function``/``evaluate`` work; the app itself runs as shipped.

Screenshots of the key states go to $WARRANTYSYNC_SHOTS (default: a temp dir).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    async_playwright,
    expect,
)

from chromium import CHROMIUM, CHROMIUM_ARGS
from conftest import LiveFactory
from factories import PASSWORD, World
from live import LiveServer, reading
from servers import RedisServer
from warrantysync.services.cases import Actor, CaseService
from warrantysync.storage.db import Database

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

HAVE_CHROMIUM = CHROMIUM.exists()
VIEWPORT = {"width": 1366, "height": 768}
WAIT_MS = 10_000  # any single expectation; the machine running CI may be slow
SHOTS = Path(os.environ.get("WARRANTYSYNC_SHOTS") or tempfile.gettempdir()) / "warrantysync-shots"

EMAILS = {
    "alice": "alice@example.com",
    "bob": "bob@example.com",
    "carol": "carol@example.com",
    "dave": "dave@example.com",
}
NAMES = {"alice": "Alice Johnson", "bob": "Bob Smith", "carol": "Carol Diaz", "dave": "Dave Kim"}

# Installed before the app's scripts: records what happens between two polls
# (a 1.8 s highlight, a pill passing through a state) so tests do not race it.
RECORDER = """
(() => {
  window.__flashes = [];
  window.__states = [];
  window.__lastInput = null;  // Date.now() of the last keystroke or dropdown change
  for (const type of ['input', 'change']) {
    document.addEventListener(type, () => { window.__lastInput = Date.now(); }, true);
  }
  new MutationObserver((records) => {
    for (const r of records) {
      const el = r.target;
      if (r.attributeName === 'class' && el.classList.contains('flash')
          && !(r.oldValue || '').split(/\\s+/).includes('flash')) {
        const tr = el.closest('tr[data-case-id]');
        if (tr && el.dataset.field) {
          window.__flashes.push(`${tr.dataset.caseId}:${el.dataset.field}`);
        }
      } else if (r.attributeName === 'data-state' && el.id === 'connection-status') {
        window.__states.push(el.dataset.state);
      }
    }
  }).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                        attributeFilter: ['class', 'data-state']});
})();
"""


# --- fixtures ------------------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
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


@dataclass
class Window:
    """One person's browser (a context of its own: cookies, storage) on the branch page."""

    who: str
    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    patches: list[Request] = field(default_factory=list)  # PATCH requests, in order

    @property
    def name(self) -> str:
        return NAMES[self.who]

    def cell(self, case_id: int, name: str) -> Locator:
        return self.page.locator(f'tr[data-case-id="{case_id}"] [data-field="{name}"]')

    def control(self, case_id: int, name: str) -> Locator:
        return self.cell(case_id, name).locator("input, select, textarea")

    @property
    def pill(self) -> Locator:
        return self.page.locator("#connection-status")

    @property
    def toasts(self) -> Locator:
        return self.page.locator("#toasts .toast")

    async def click_away(self) -> None:
        """Click on plain text: the focused control blurs, nothing else takes focus."""
        await self.page.locator(".branch-name").click()

    async def type_into(self, case_id: int, name: str, text: str, delay: float = 20) -> None:
        """Focus the cell (takes the lock), select what is there, type over it."""
        await self.control(case_id, name).click()
        await self.page.keyboard.press("Control+A")
        await self.page.keyboard.type(text, delay=delay)

    def patches_to(self, case_id: int) -> list[Request]:
        return [r for r in self.patches if r.url.endswith(f"/api/cases/{case_id}")]

    async def last_input(self) -> float:
        value = await self.page.evaluate("window.__lastInput")
        assert value is not None, "no input event recorded"
        return float(value)

    async def flashes(self) -> list[str]:
        return await self.page.evaluate("window.__flashes")

    async def shot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        await self.page.screenshot(path=str(path))
        return path


Opener = Callable[..., Awaitable[Window]]


@pytest_asyncio.fixture(loop_scope="module")
async def windows(browser: Browser) -> AsyncIterator[Opener]:
    """``await open(server, world, "alice")`` → a signed-in Window on the downtown table."""
    opened: list[Window] = []

    async def open_window(
        server: LiveServer, world: World, who: str, *, branch: str = "downtown"
    ) -> Window:
        context = await browser.new_context(viewport=VIEWPORT, bypass_csp=True)
        context.set_default_timeout(WAIT_MS)
        await context.add_init_script(RECORDER)
        page = await context.new_page()
        window = Window(who, context, page)
        opened.append(window)
        page.on("pageerror", lambda error: window.errors.append(str(error)))
        page.on(
            "request",
            lambda request: window.patches.append(request) if request.method == "PATCH" else None,
        )
        # Any /beforeunload "leave the page?" prompt: leave (a reload is what the test wants).
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        branch_id = world.branches[branch]
        await page.goto(f"{server.url}/branch/{branch_id}")
        await page.locator("input[name=email]").fill(EMAILS[who])
        await page.locator("input[name=password]").fill(PASSWORD)
        await page.locator("button[type=submit]").click()
        await page.wait_for_url(f"**/branch/{branch_id}")
        await expect(window.pill).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        await expect(page.locator("tr[data-case-id]").first).to_be_visible()
        return window

    yield open_window
    for window in opened:
        with contextlib.suppress(Exception):
            await window.context.close()
    errors = [f"{w.who}: {e}" for w in opened for e in w.errors]
    assert not errors, f"uncaught errors in the page: {errors}"


async def open_pair(open_window: Opener, server: LiveServer, world: World, a: str, b: str):
    return await asyncio.gather(open_window(server, world, a), open_window(server, world, b))


@contextlib.asynccontextmanager
async def api_as(server: LiveServer, who: str) -> AsyncIterator[httpx.AsyncClient]:
    """A script's view of the server: cookie session plus CSRF header."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        answer = await http.post(
            "/api/auth/login", json={"email": EMAILS[who], "password": PASSWORD}
        )
        assert answer.status_code == 200, answer.text
        http.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
        yield http


async def server_case(server: LiveServer, case_id: int) -> dict[str, Any]:
    async with api_as(server, "dave") as http:
        answer = await http.get(f"/api/cases/{case_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()


def body_of(request: Request) -> dict[str, Any]:
    return json.loads(request.post_data or "{}")


# --- the five scenarios of the testing guide -------------------------------------


async def test_1_an_edit_in_one_window_appears_in_the_other(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone = world.cases["phone"]
    alice, bob = await open_pair(windows, server, world, "alice", "bob")
    # Each sees who else is here.
    for window in (alice, bob):
        await expect(window.page.locator("#presence li")).to_have_count(2, timeout=WAIT_MS)
    await expect(bob.page.locator("#presence")).to_contain_text("Alice Johnson")

    await alice.type_into(phone, "customer_name", "Jane Doe")
    await alice.click_away()

    await expect(bob.control(phone, "customer_name")).to_have_value("Jane Doe", timeout=WAIT_MS)
    await bob.page.wait_for_function(
        f"window.__flashes.includes('{phone}:customer_name')", timeout=WAIT_MS
    )
    assert (await server_case(server, phone))["customer_name"] == "Jane Doe"

    # The side panel shows the change in the case's history.
    await bob.page.locator(f'tr[data-case-id="{phone}"] .case-link').click()
    panel = bob.page.locator("#side-panel")
    await expect(panel).to_be_visible()
    entry = panel.locator(".timeline li").filter(has_text="Alice Johnson")
    await expect(entry.first).to_contain_text("Jane Doe", timeout=WAIT_MS)
    await bob.shot("side-panel-history")


async def test_2_a_field_being_edited_is_locked_for_the_other_until_blur(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone = world.cases["phone"]
    alice, bob = await open_pair(windows, server, world, "alice", "bob")

    await alice.control(phone, "customer_name").click()

    cell = bob.cell(phone, "customer_name")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    title = re.compile(r"^Locked by Alice Johnson · idle \d+ s · ends in \d+ s$")
    await expect(cell).to_have_attribute("title", title)
    badge = cell.locator(".lock-badge")
    await expect(badge).to_be_visible()
    await expect(badge).to_contain_text("🔒")
    await expect(bob.control(phone, "customer_name")).to_be_disabled()
    # Only that field: the rest of the row stays editable.
    await expect(bob.control(phone, "product")).to_be_enabled()
    await cell.hover()
    await bob.shot("lock-indicator")

    await alice.click_away()
    await expect(cell).not_to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    assert await cell.get_attribute("data-locked-by") is None
    assert await cell.get_attribute("title") is None
    await expect(cell.locator(".lock-badge")).to_have_count(0)
    await expect(bob.control(phone, "customer_name")).to_be_enabled()

    # Escape lets go as well.
    await alice.control(phone, "customer_name").click()
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    await alice.page.keyboard.press("Escape")
    await expect(bob.control(phone, "customer_name")).to_be_enabled(timeout=WAIT_MS)

    # ...and Bob can now edit it, which Alice sees locked by him.
    await bob.control(phone, "customer_name").click()
    await expect(alice.cell(phone, "customer_name")).to_have_attribute(
        "data-locked-by", "Bob Smith", timeout=WAIT_MS
    )


async def test_a_manager_can_take_a_lock_away(live_factory: LiveFactory, windows: Opener) -> None:
    server, world = live_factory(lock_ttl="30")
    phone = world.cases["phone"]
    alice, dave = await open_pair(windows, server, world, "alice", "dave")

    await alice.control(phone, "issue").click()
    cell = dave.cell(phone, "issue")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    release = cell.locator("button.lock-release")
    await expect(release).to_be_visible()
    await release.click()
    # Freed for everyone long before the 30 s TTL; Dave can edit at once.
    await expect(cell).not_to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    await expect(dave.control(phone, "issue")).to_be_enabled()
    # An editor's badge stays a plain marker, not a button.
    await dave.control(phone, "issue").click()
    badge = alice.cell(phone, "issue").locator(".lock-badge")
    await expect(badge).to_be_visible(timeout=WAIT_MS)
    await expect(alice.cell(phone, "issue").locator("button.lock-release")).to_have_count(0)


async def test_3_typing_fast_sends_exactly_one_save_after_the_pause(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="1000")
    phone = world.cases["phone"]
    alice = await windows(server, world, "alice")
    text = "Quick Brown Foxes 20"
    assert len(text) == 20

    await alice.type_into(phone, "customer_name", text, delay=25)
    cell = alice.cell(phone, "customer_name")
    await expect(cell).to_have_attribute("data-save-state", "saved", timeout=WAIT_MS)
    await asyncio.sleep(1.5)  # another debounce period: nothing else may follow

    sent = alice.patches_to(phone)
    assert len(sent) == 1, [body_of(r) for r in sent]
    # Both clocks are the browser's: the pause is measured where it happened.
    pause = sent[0].timing["startTime"] - await alice.last_input()
    assert 950 <= pause < 5000, f"sent {pause:.0f} ms after the last keystroke"
    body = body_of(sent[0])
    assert body["changes"] == {"customer_name": text}
    assert body["expected"] == {"customer_name": "John Smith"}
    assert set(body["lock_tokens"]) == {"customer_name"}
    assert body["lock_tokens"]["customer_name"]
    headers = await sent[0].all_headers()
    assert headers.get("idempotency-key")
    assert headers.get("x-client-id")
    assert headers.get("x-csrf-token")
    assert (await server_case(server, phone))["customer_name"] == text


def restart_on_same_port(server: LiveServer, started: list[LiveServer]) -> LiveServer:
    """The server comes back: same port, same database, fresh process."""
    again = LiveServer(env=server.env, log_path=server.log_path, port=server.port)
    started.append(again)
    return again.start()


async def patch_in_db(server: LiveServer, case_id: int, actor: Actor, **changes: Any) -> None:
    """Another node commits while this one is down: the outbox has the event, no live fan-out."""
    db = Database(server.env["WARRANTYSYNC_DATABASE_URL"])

    async def nowhere(_event: object) -> None:
        return None

    try:
        cases = CaseService(db, publish=nowhere, replay_window=10000)
        await cases.patch(case_id=case_id, changes=changes, expected={}, actor=actor)
    finally:
        await db.dispose()


async def test_4_server_away_turns_the_pill_red_and_back_green_with_catch_up(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(reconnect_delays_ms="300,600,1000")
    phone, laptop = world.cases["phone"], world.cases["laptop"]
    alice, bob = await open_pair(windows, server, world, "alice", "bob")
    restarted: list[LiveServer] = []
    try:
        server.stop()  # SIGTERM: every stream gets `goodbye`, then the process exits
        await expect(bob.pill).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
        states = await bob.page.evaluate("window.__states")
        assert "reconnecting" in states[states.index("connected") :], states
        await bob.shot("connection-offline")

        # Meanwhile: Alice types while the server is away (kept, retried), and
        # another node commits a change Bob has not seen.
        await alice.type_into(laptop, "product", "XPS 15")
        await alice.click_away()
        await expect(alice.cell(laptop, "product")).to_have_attribute(
            "data-save-state", "dirty", timeout=WAIT_MS
        )
        await patch_in_db(
            server, phone, Actor(world.users["dave"], NAMES["dave"]), customer_name="Back Online"
        )

        restart_on_same_port(server, restarted)
        for window in (alice, bob):
            await expect(window.pill).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        # Caught up on the change made while away (replayed from the outbox)...
        await expect(bob.control(phone, "customer_name")).to_have_value(
            "Back Online", timeout=WAIT_MS
        )
        await expect(alice.control(phone, "customer_name")).to_have_value("Back Online")
        # ...and Alice's offline edit was saved once the server answered again.
        await expect(alice.cell(laptop, "product")).to_have_attribute(
            "data-save-state", "saved", timeout=WAIT_MS
        )
        await expect(bob.control(laptop, "product")).to_have_value("XPS 15", timeout=WAIT_MS)

        # Live again: an edit made now arrives as it happens.
        async with api_as(server, "dave") as http:
            answer = await http.patch(f"/api/cases/{laptop}", json={"changes": {"status": "ready"}})
            assert answer.status_code == 200, answer.text
        await expect(bob.control(laptop, "status")).to_have_value("ready", timeout=WAIT_MS)
        await expect(bob.pill).to_have_attribute("data-state", "connected")
    finally:
        for again in restarted:
            again.kill()


async def test_5_a_lock_of_a_closed_window_goes_within_the_disconnect_grace(
    live_factory: LiveFactory, windows: Opener
) -> None:
    # A 30 s TTL: only the disconnect path can free the lock within the test.
    server, world = live_factory(lock_ttl="30", disconnect_grace="0.5")
    phone = world.cases["phone"]
    alice, bob = await open_pair(windows, server, world, "alice", "bob")

    async with (
        api_as(server, "dave") as http,
        reading(
            http, f"/api/branches/{world.branches['downtown']}/events?client_id=watcher"
        ) as events,
    ):
        await events.next("ready")
        await alice.control(phone, "customer_name").click()
        cell = bob.cell(phone, "customer_name")
        await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)

        # The window dies without a chance to say goodbye (no pagehide, no DELETE).
        cdp = await alice.context.new_cdp_session(alice.page)
        # Page.crash never answers (the page is gone): do not wait for it.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cdp.send("Page.crash"), 1)
        closed_at = time.monotonic()
        await asyncio.wait_for(alice.context.close(), 5)

        await expect(cell).not_to_have_attribute("data-locked-by", "Alice Johnson", timeout=5_000)
        freed_after = time.monotonic() - closed_at
        assert freed_after < 5.0, f"lock freed only after {freed_after:.1f}s"
        await expect(bob.control(phone, "customer_name")).to_be_enabled()
        released = await events.next(
            "lock-released", skip=("heartbeat", "presence", "lock-acquired")
        )
        assert released.data["reason"] == "disconnected", released.data
    alice.errors.clear()  # the crash is ours


# --- further behaviour of the browser client ------------------------------------------------


async def test_a_rejected_value_reverts_and_says_why_in_a_toast(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone = world.cases["phone"]
    alice = await windows(server, world, "alice")

    # Email is one of the columns 1366 px has no room for: edited in the side panel.
    await alice.page.locator(f'tr[data-case-id="{phone}"] .case-link').click()
    field = alice.page.locator("#panel-customer_email")
    await field.click()
    await alice.page.keyboard.type("not-an-email", delay=20)
    await alice.click_away()

    # Said in words, not as the API's "customer_email: is not a valid email address (…)".
    toast = alice.toasts.filter(has_text="Email must be an email address")
    await expect(toast.first).to_be_visible(timeout=WAIT_MS)
    assert "customer_email" not in await alice.toasts.first.inner_text()
    await expect(field).to_have_value("")
    await expect(alice.control(phone, "customer_email")).to_have_value("")
    await expect(alice.cell(phone, "customer_email")).to_have_attribute("data-save-state", "error")
    statuses = [await r.response() for r in alice.patches_to(phone)]
    assert [s.status for s in statuses if s] == [422]
    assert (await server_case(server, phone))["customer_email"] == ""
    await alice.shot("toast-422")


async def test_a_dropdown_saves_at_once(live_factory: LiveFactory, windows: Opener) -> None:
    server, world = live_factory(debounce_ms="5000")
    phone = world.cases["phone"]
    alice, bob = await open_pair(windows, server, world, "alice", "bob")

    select = alice.control(phone, "status")
    await select.focus()
    await select.select_option("diagnosing")

    await expect(bob.control(phone, "status")).to_have_value("diagnosing", timeout=WAIT_MS)
    sent = alice.patches_to(phone)
    assert len(sent) == 1
    await sent[0].response()
    delay = sent[0].timing["startTime"] - await alice.last_input()
    assert delay < 2000, f"sent {delay:.0f} ms after the change: a dropdown must not wait 5 s"
    assert body_of(sent[0])["changes"] == {"status": "diagnosing"}
    assert body_of(sent[0])["expected"] == {"status": "new"}
    await bob.page.wait_for_function(f"window.__flashes.includes('{phone}:status')")
    assert (await server_case(server, phone))["status"] == "diagnosing"


async def test_a_conflict_offers_keep_theirs_or_use_mine(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="5000")
    phone = world.cases["phone"]
    alice = await windows(server, world, "alice")

    # Locks unavailable (as while Redis is down): Alice edits on, her save carries
    # `expected`, which is all that stands between her and Bob's newer value.
    async def no_locks(route: Any) -> None:
        if route.request.method == "PUT":
            await route.fulfill(
                status=503,
                headers={"Retry-After": "1"},
                json={"error": "unavailable", "message": "Locks are unavailable."},
            )
        else:
            await route.continue_()

    await alice.page.route("**/locks/**", no_locks)
    await alice.type_into(phone, "customer_name", "Mine Version")
    async with api_as(server, "bob") as http:
        answer = await http.patch(
            f"/api/cases/{phone}", json={"changes": {"customer_name": "Theirs Version"}}
        )
        assert answer.status_code == 200, answer.text
    # Alice's screen keeps her text, whatever the stream says.
    await asyncio.sleep(1.0)
    await expect(alice.control(phone, "customer_name")).to_have_value("Mine Version")
    await alice.click_away()

    dialog = alice.page.locator("#conflict-dialog")
    await expect(dialog).to_be_visible(timeout=WAIT_MS)
    await expect(dialog.locator(".conflict-value.theirs")).to_contain_text("Theirs Version")
    await expect(dialog.locator(".conflict-value.mine")).to_contain_text("Mine Version")
    await expect(dialog).to_contain_text("Bob Smith")
    await alice.shot("conflict-dialog")
    first = body_of(alice.patches_to(phone)[0])
    assert first["expected"] == {"customer_name": "John Smith"}

    await dialog.locator("[data-choice=mine]").click()
    await expect(dialog).to_be_hidden()
    await expect(alice.cell(phone, "customer_name")).to_have_attribute(
        "data-save-state", "saved", timeout=WAIT_MS
    )
    last = body_of(alice.patches_to(phone)[-1])
    assert last["expected"] == {"customer_name": "Theirs Version"}
    assert (await server_case(server, phone))["customer_name"] == "Mine Version"


async def test_unsaved_text_survives_a_reload_and_is_saved(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="5000")
    phone = world.cases["phone"]
    alice = await windows(server, world, "alice")

    # Saves fail until the reloaded page has fetched its snapshot: only the
    # localStorage draft can carry the text across the reload.
    reloaded = asyncio.Event()

    async def saves(route: Any) -> None:
        if route.request.method == "PATCH" and not reloaded.is_set():
            with contextlib.suppress(Exception):
                await route.abort()
        else:
            await route.continue_()

    async def snapshot(route: Any) -> None:
        reloaded.set()  # routed only from the reload on: this is the new page loading
        await route.continue_()

    await alice.page.route("**/api/cases/*", saves)
    await alice.type_into(phone, "issue", "Call back after 5pm")
    drafts = await alice.page.evaluate("JSON.stringify(Object.assign({}, localStorage))")
    assert "Call back after 5pm" in drafts
    # The page's list, whatever the query (docs/protocol.md, "Listing cases").
    await alice.page.route(re.compile(r"/api/branches/\d+/cases(\?|$)"), snapshot)
    await alice.page.reload()

    await expect(alice.toasts.filter(has_text="Restored 1 unsaved change").first).to_be_visible(
        timeout=WAIT_MS
    )
    await expect(alice.control(phone, "issue")).to_have_value("Call back after 5pm")
    await expect(alice.cell(phone, "issue")).to_have_attribute(
        "data-save-state", "saved", timeout=WAIT_MS
    )
    assert (await server_case(server, phone))["issue"] == "Call back after 5pm"
    assert "Call back" not in await alice.page.evaluate(
        "JSON.stringify(Object.assign({}, localStorage))"
    )


async def test_a_viewer_sees_read_only_controls(live_factory: LiveFactory, windows: Opener) -> None:
    server, world = live_factory()
    phone = world.cases["phone"]
    carol, bob = await open_pair(windows, server, world, "carol", "bob")

    name = carol.control(phone, "customer_name")
    await expect(name).to_have_js_property("readOnly", True)
    await expect(carol.control(phone, "status")).to_be_disabled()
    await expect(carol.page.locator("#new-case")).to_be_hidden()
    await name.click()
    await carol.page.keyboard.type("nope")
    await expect(name).to_have_value("John Smith")
    await carol.click_away()
    await asyncio.sleep(0.5)
    assert carol.patches == []
    # A viewer never takes a lock: Bob's cell stays free, and Bob's edits reach Carol.
    assert await bob.cell(phone, "customer_name").get_attribute("data-locked-by") is None
    await bob.type_into(phone, "customer_name", "Edited By Bob")
    await bob.click_away()
    await expect(name).to_have_value("Edited By Bob", timeout=WAIT_MS)


async def test_own_edits_are_not_flashed_or_applied_twice(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="300")
    phone = world.cases["phone"]
    alice, bob = await open_pair(windows, server, world, "alice", "bob")

    # Keep typing across several debounced saves: the echoes of the earlier
    # saves must never overwrite what is on screen.
    await alice.control(phone, "customer_name").click()
    await alice.page.keyboard.press("Control+A")
    for chunk in ["Ann", " Marie", " Smith"]:
        await alice.page.keyboard.type(chunk, delay=20)
        await asyncio.sleep(0.6)
    await alice.click_away()
    await expect(bob.control(phone, "customer_name")).to_have_value(
        "Ann Marie Smith", timeout=WAIT_MS
    )
    await expect(alice.cell(phone, "customer_name")).to_have_attribute(
        "data-save-state", "saved", timeout=WAIT_MS
    )
    await asyncio.sleep(1.0)  # the last echo has arrived
    await expect(alice.control(phone, "customer_name")).to_have_value("Ann Marie Smith")
    assert await alice.flashes() == []
    assert f"{phone}:customer_name" in await bob.flashes()
    assert len(alice.patches_to(phone)) >= 2
    async with api_as(server, "dave") as http:
        history = (await http.get(f"/api/cases/{phone}/history")).json()
    # Newest first; the row of version 1 is the case's creation.
    names = [h["new"] for h in history if h["field"] == "customer_name" and h["version"] > 1]
    assert names[0] == "Ann Marie Smith"
    assert len(names) == len(alice.patches_to(phone)), "one audit row per save, none twice"


# --- the field table the page sends (casefields.py → static/js/fields.js) ----------

CONTROLS_OF_ROW = """(caseId) => {
  const fields = JSON.parse(document.getElementById('ws-config').textContent).fields;
  const tr = document.querySelector(`tr[data-case-id="${caseId}"]`);
  const controls = {};
  for (const td of tr.querySelectorAll('td[data-field]')) {
    const c = td.querySelector('[data-control]');
    controls[td.dataset.field] = {
      tag: c.tagName.toLowerCase(), type: c.getAttribute('type'), cell: td.className,
      maxlength: c.getAttribute('maxlength'), max: c.getAttribute('max'),
      options: c.tagName === 'SELECT' ? [...c.options].map((o) => [o.value, o.text]) : null,
    };
  }
  const headers = [...document.querySelectorAll('#cases-table thead th')]
    .map((th) => [th.querySelector('[data-sort]').dataset.sort, th.textContent.trim()]);
  return { fields, controls, headers };
}"""
TAGS = {"text": ("input", "text"), "multiline": ("textarea", None), "date": ("input", "date")}


async def test_the_table_controls_follow_the_field_table(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    seen = await alice.page.evaluate(CONTROLS_OF_ROW, world.cases["phone"])
    rows = {row["name"]: row for row in seen["fields"]}
    assert rows["customer_name"]["max_length"] == 120  # the page really sent the table
    assert [label for _, label in seen["headers"]] == [rows[f]["label"] for f, _ in seen["headers"]]
    assert seen["controls"], "no editable cells"
    for name, control in seen["controls"].items():
        row = rows[name]
        assert row["editable"], name
        assert f"cell-{row['kind']}" in control["cell"].split(), (name, control)
        if row["kind"] == "select":
            assert control["tag"] == "select", name
            values = [value for value, _ in control["options"]]
            if row["member_of_branch"]:
                assert values[0] == "" and len(values) > 1, values
            else:
                assert values == row["choices"], name
        else:
            assert (control["tag"], control["type"]) == TAGS[row["kind"]], name
        limit = row["max_length"]
        assert control["maxlength"] == (None if limit is None else str(limit)), name
        assert (control["max"] is not None) is row["not_future"], name
    statuses = dict(seen["controls"]["status"]["options"])
    assert statuses["awaiting_parts"] == "Awaiting parts"


async def test_a_new_case_starts_from_the_tables_defaults(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    page = alice.page
    await page.locator("#new-case").click()
    dialog = page.locator("#new-case-dialog")
    await expect(dialog).to_be_visible()
    name = dialog.locator("#new-customer_name")
    await expect(name).to_be_focused()
    await expect(name).to_have_js_property("required", True)
    await expect(dialog.locator("label[for=new-customer_name]")).to_have_text("Customer *")
    await expect(dialog.locator("#new-product")).to_have_js_property("required", False)
    await expect(dialog.locator("#new-status")).to_have_value("new")
    await expect(dialog.locator("#new-priority")).to_have_value("normal")
    await expect(dialog.locator("#new-assignee_id")).to_have_value("")
    await expect(dialog.locator("#new-issue")).to_have_attribute("maxlength", "2000")
    assert await dialog.locator("#new-notes").count() == 0
    await alice.shot("new-case-dialog")

    await name.fill("Nora New")
    await dialog.locator("#new-priority").select_option("high")
    async with page.expect_response("**/api/branches/*/cases") as answer:
        await dialog.locator("button[type=submit]").click()
    created = await (await answer.value).json()
    await expect(dialog).to_be_hidden()
    await expect(page.locator(f'tr[data-case-id="{created["id"]}"]')).to_be_visible()
    case = await server_case(server, created["id"])
    assert (case["customer_name"], case["status"], case["priority"]) == ("Nora New", "new", "high")
    assert (case["assignee_id"], case["purchase_date"], case["notes"]) == (None, None, "")


async def test_a_lock_taken_under_a_borrowed_client_id_still_shows_as_locked(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(lock_ttl="30", disconnect_grace="30")
    phone, downtown = world.cases["phone"], world.branches["downtown"]
    alice = await windows(server, world, "alice")

    async with (
        api_as(server, "bob") as bob,
        reading(bob, f"/api/branches/{downtown}/events?client_id=bob-script") as events,
    ):
        await events.next("ready")
        # Bob learns the id of Alice's tab from the echo of a save of hers...
        await alice.type_into(phone, "issue", "Mine")
        await alice.click_away()
        update = await events.next(
            "case-updated", skip=("heartbeat", "presence", "lock-acquired", "lock-released")
        )
        borrowed = update.data["client_id"]
        assert borrowed and update.data["by"]["id"] == world.users["alice"]
        # ...and takes a lock under it.
        taken = await bob.put(
            f"/api/cases/{phone}/locks/product", headers={"X-Client-Id": borrowed}
        )
        assert taken.status_code == 200, taken.text

    # Alice's tab still sees a field locked by Bob, not one of her own.
    cell = alice.cell(phone, "product")
    await expect(cell).to_have_attribute("data-locked-by", "Bob Smith", timeout=WAIT_MS)
    await expect(cell).to_have_attribute("title", re.compile(r"^Locked by Bob Smith · "))
    await expect(alice.control(phone, "product")).to_be_disabled()
    # A reload (snapshot, then `ready`) tells the same story.
    await alice.page.reload()
    await expect(alice.pill).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    await expect(cell).to_have_attribute("data-locked-by", "Bob Smith", timeout=WAIT_MS)
    await expect(alice.control(phone, "product")).to_be_disabled()


@pytest.mark.redis
async def test_redis_away_shows_a_calm_banner_while_saving_goes_on(
    live_factory: LiveFactory, windows: Opener, redis_server: RedisServer
) -> None:
    server, world = live_factory(redis_url=redis_server.url.rsplit("/", 1)[0] + "/6")
    phone = world.cases["phone"]
    alice = await windows(server, world, "alice")
    banner = alice.page.locator("#live-state-banner")
    await expect(banner).to_be_hidden()

    await asyncio.to_thread(redis_server.down)
    try:
        # The open page is told at once; a page loaded during the outage too.
        await expect(banner).to_be_visible(timeout=WAIT_MS)
        await alice.page.reload()
        await expect(alice.pill).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        await expect(banner).to_be_visible(timeout=WAIT_MS)
        await expect(banner).to_have_text(
            "Live locks are unavailable; your saves are still checked against changes by others"
        )
        await alice.shot("live-state-unavailable")

        await alice.type_into(phone, "customer_name", "Saved Anyway")
        await alice.click_away()
        await expect(alice.cell(phone, "customer_name")).to_have_attribute(
            "data-save-state", "saved", timeout=WAIT_MS
        )
        assert (await server_case(server, phone))["customer_name"] == "Saved Anyway"
        assert body_of(alice.patches_to(phone)[-1])["expected"] == {"customer_name": "John Smith"}
    finally:
        if not redis_server._answers():
            await asyncio.to_thread(redis_server.up, wipe_data=True)

    await expect(banner).to_be_hidden(timeout=WAIT_MS)
    await expect(alice.pill).to_have_attribute("data-state", "connected")
