"""Working in the table all day, in Chromium: the spreadsheet keyboard, locks
only while editing, the defects people hit, readable cells, linkable cases,
print, and the password change.

Each test starts its own server and signs people in through the real form
(the fixtures of tests/test_browser.py). Lock and save requests are counted
from what the browser really sent.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, Request, expect

import test_browser
from conftest import LiveFactory
from live import LiveServer
from test_browser import (
    WAIT_MS,
    Opener,
    Window,
    api_as,
    body_of,
    open_pair,
    restart_on_same_port,
    server_case,
)

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
# The Chromium and the signed-in windows of tests/test_browser.py, one Chromium per module.
browser = test_browser.browser
windows = test_browser.windows


def lock_calls(window: Window) -> list[tuple[str, str]]:
    """Start recording this window's lock requests: (method, URL)."""
    calls: list[tuple[str, str]] = []

    def record(request: Request) -> None:
        if "/locks/" in request.url:
            calls.append((request.method, request.url))

    window.page.on("request", record)
    return calls


async def focused(page: Page) -> dict[str, Any]:
    """What has the keyboard: tag, the cell's case id and column, whether it is a control."""
    return await page.evaluate(
        """() => {
          const el = document.activeElement;
          const cell = el && el.closest('[data-col]');
          const tr = el && el.closest('tr');
          const row = tr && tr.dataset.caseId ? Number(tr.dataset.caseId) : (tr ? 'header' : null);
          return { tag: el ? el.tagName : null, col: cell ? cell.dataset.col : null, row,
                   control: Boolean(el && el.dataset && el.dataset.control) };
        }"""
    )


async def row_order(page: Page) -> list[int]:
    return await page.evaluate(
        "[...document.querySelectorAll('#cases-table tbody tr:not([hidden])')]"
        ".map((tr) => Number(tr.dataset.caseId))"
    )


async def into_grid(window: Window) -> None:
    """Tab from the search box until the grid has the keyboard (its one tab stop)."""
    await window.page.locator("#search").focus()
    for _ in range(8):
        await window.page.keyboard.press("Tab")
        if (await focused(window.page))["col"]:
            return
    raise AssertionError(f"Tab never reached the grid: {await focused(window.page)}")


# --- the spreadsheet keyboard ----------------------------------------------------------


async def test_the_table_is_one_tab_stop_and_arrows_move_without_locks(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    page = alice.page
    locks = lock_calls(alice)
    stops = await page.evaluate(
        "document.querySelectorAll('#cases-table [tabindex=\"0\"]').length + document"
        ".querySelectorAll('#cases-table :is(input,select,textarea,button):not([tabindex])').length"
    )
    assert stops == 1, "the grid is exactly one tab stop"

    await into_grid(alice)
    first, second = await row_order(page)
    assert await focused(page) == {**await focused(page), "row": first, "col": "case_number"}
    columns = await page.evaluate(
        "[...document.querySelectorAll('#cases-table thead th:not([hidden])')]"
        ".map((th) => th.dataset.col)"
    )
    for _ in range(11):  # along the whole row: a lock per cell was the defect
        await page.keyboard.press("ArrowRight")
    assert (await focused(page))["col"] == columns[-1]
    await page.keyboard.press("Home")
    assert (await focused(page))["col"] == "case_number"
    await page.keyboard.press("End")
    assert (await focused(page))["col"] == columns[-1]
    await page.keyboard.press("ArrowDown")
    assert (await focused(page))["row"] == second
    await page.keyboard.press("PageUp")
    assert (await focused(page))["row"] == first
    await page.keyboard.press("PageDown")
    assert (await focused(page))["row"] == second
    await page.keyboard.press("Control+Home")
    assert (await focused(page))["row"] == first
    await page.keyboard.press("ArrowUp")  # the header row is part of the grid
    assert (await focused(page))["row"] == "header"
    await page.keyboard.press("ArrowDown")
    where = await focused(page)
    assert (where["row"], where["col"], where["control"]) == (first, "case_number", False)
    # Tab leaves the grid instead of walking its cells.
    await page.keyboard.press("Tab")
    assert (await focused(page))["col"] is None
    await asyncio.sleep(0.3)
    assert locks == [], "moving never takes a lock"


async def test_enter_edits_enter_and_tab_commit_and_move_escape_cancels(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="5000")
    alice, bob = await open_pair(windows, server, world, "alice", "bob")
    page = alice.page
    locks = lock_calls(alice)
    first, second = await row_order(page)
    await into_grid(alice)
    await page.keyboard.press("ArrowRight")  # Customer
    assert (await focused(page))["col"] == "customer_name"

    # Enter: edit mode, the lock is taken now (Bob sees it), the value is kept.
    await page.keyboard.press("Enter")
    assert (await focused(page))["control"]
    await expect(bob.cell(first, "customer_name")).to_have_attribute(
        "data-locked-by", "Alice Johnson", timeout=WAIT_MS
    )
    before = await alice.control(first, "customer_name").input_value()
    await page.keyboard.type(" Jr")
    # Enter commits (saved at once, not after the 5 s debounce) and moves down.
    await page.keyboard.press("Enter")
    where = await focused(page)
    assert (where["row"], where["col"], where["control"]) == (second, "customer_name", False)
    await expect(bob.control(first, "customer_name")).to_have_value(f"{before} Jr", timeout=WAIT_MS)
    await expect(bob.cell(first, "customer_name")).not_to_have_attribute(
        "data-locked-by", "Alice Johnson", timeout=WAIT_MS
    )

    # Typing a character replaces the value; Tab commits and moves right.
    await page.keyboard.type("Zed")
    assert (await focused(page))["control"]
    await page.keyboard.press("Tab")
    where = await focused(page)
    assert (where["row"], where["col"], where["control"]) == (second, "product", False)
    await expect(bob.control(second, "customer_name")).to_have_value("Zed", timeout=WAIT_MS)

    # Escape cancels: the old value is back, nothing saved, the keyboard stays on the cell.
    product = await alice.control(second, "product").input_value()
    await page.keyboard.press("F2")
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Never saved")
    saves = len(alice.patches_to(second))
    await page.keyboard.press("Escape")
    where = await focused(page)
    assert (where["tag"], where["row"], where["col"]) == ("TD", second, "product")
    await expect(alice.control(second, "product")).to_have_value(product)
    await expect(bob.cell(second, "product")).not_to_have_attribute(
        "data-locked-by", "Alice Johnson", timeout=WAIT_MS
    )
    await asyncio.sleep(0.5)
    assert len(alice.patches_to(second)) == saves
    assert (await server_case(server, second))["product"] == product
    puts = [url for method, url in locks if method == "PUT"]
    deletes = [url for method, url in locks if method == "DELETE"]
    assert len(puts) == 3 and len(deletes) == 3, locks  # one per edit, none per move


async def test_a_click_or_a_paste_starts_editing_and_question_mark_shows_the_keys(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="300")
    alice = await windows(server, world, "alice")
    page = alice.page
    first, _second = await row_order(page)
    await into_grid(alice)
    await page.keyboard.press("ArrowRight")
    await page.keyboard.press("ArrowRight")  # Product
    await page.evaluate(
        """() => {
          const data = new DataTransfer();
          data.setData('text/plain', 'Pasted Phone 15');
          const paste = new ClipboardEvent(
            'paste', { clipboardData: data, bubbles: true, cancelable: true });
          document.activeElement.dispatchEvent(paste);
        }"""
    )
    assert (await focused(page))["control"]
    await page.keyboard.press("Enter")
    await expect(alice.cell(first, "product")).to_have_attribute(
        "data-save-state", "saved", timeout=WAIT_MS
    )
    assert (await server_case(server, first))["product"] == "Pasted Phone 15"

    await page.keyboard.press("?")
    dialog = page.locator("#shortcuts-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("Cancel the edit and stay on the cell")
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()

    # The seed's "click to edit" still works and takes the lock.
    locks = lock_calls(alice)
    await alice.control(first, "customer_name").click()
    await page.wait_for_timeout(300)
    assert [m for m, _ in locks] == ["PUT"]


# --- defects -----------------------------------------------------------------------------


async def test_a_forced_release_stops_the_holder_and_keeps_her_text_as_a_draft(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="5000", lock_ttl="30")
    phone = world.cases["phone"]
    alice, dave = await open_pair(windows, server, world, "alice", "dave")

    await alice.type_into(phone, "issue", "Screen flickers when warm")
    cell = dave.cell(phone, "issue")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    await cell.locator("button.lock-release").click()

    # Alice is out of edit mode, her text is still there, and she is told who did it.
    toast = alice.toasts.filter(has_text="Dave Kim released your lock on Issue")
    await expect(toast.first).to_be_visible(timeout=WAIT_MS)
    where = await focused(alice.page)
    assert (where["tag"], where["col"], where["control"]) == ("TD", "issue", False)
    await expect(alice.control(phone, "issue")).to_have_value("Screen flickers when warm")
    await expect(alice.cell(phone, "issue")).to_have_attribute("data-draft", "")
    # Her next keystrokes neither edit nor save: everyone else sees the field free.
    await alice.page.keyboard.type("more")
    await asyncio.sleep(1.0)
    await expect(alice.control(phone, "issue")).to_have_value("Screen flickers when warm")
    assert alice.patches_to(phone) == []
    await expect(cell).not_to_have_attribute("data-locked-by", "Alice Johnson")

    # She chooses to save the draft: sent once, under a fresh lock, with what it was typed over.
    await toast.first.locator("button", has_text="Save my text").click()
    await expect(dave.control(phone, "issue")).to_have_value(
        "Screen flickers when warm", timeout=WAIT_MS
    )
    [sent] = alice.patches_to(phone)
    assert body_of(sent)["expected"] == {"issue": ""}
    await expect(alice.cell(phone, "issue")).not_to_have_attribute("data-draft", "")


async def test_a_forced_release_draft_can_be_discarded(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="5000", lock_ttl="30")
    phone = world.cases["phone"]
    alice, dave = await open_pair(windows, server, world, "alice", "dave")
    await alice.type_into(phone, "product", "Typed over")
    cell = dave.cell(phone, "product")
    await expect(cell).to_have_attribute("data-locked-by", "Alice Johnson", timeout=WAIT_MS)
    await cell.locator("button.lock-release").click()
    toast = alice.toasts.filter(has_text="released your lock")
    await toast.first.locator("button", has_text="Discard").click()
    await expect(alice.control(phone, "product")).to_have_value("iPhone 14")
    await asyncio.sleep(0.5)
    assert alice.patches_to(phone) == []


async def test_a_dropdown_walked_with_arrow_keys_saves_once(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="800")
    alice = await windows(server, world, "alice")
    page = alice.page
    first, _ = await row_order(page)
    await into_grid(alice)
    for _ in range(3):
        await page.keyboard.press("ArrowRight")
    assert (await focused(page))["col"] == "status"
    await page.keyboard.press("Enter")
    for _ in range(3):
        await page.keyboard.press("ArrowDown")
        await asyncio.sleep(0.1)
    await expect(alice.control(first, "status")).to_have_value("in_repair")
    await expect(alice.cell(first, "status")).to_have_attribute(
        "data-save-state", "saved", timeout=WAIT_MS
    )
    await asyncio.sleep(1.0)
    sent = alice.patches_to(first)
    assert [body_of(r)["changes"] for r in sent] == [{"status": "in_repair"}]
    async with api_as(server, "dave") as http:
        history = (await http.get(f"/api/cases/{first}/history")).json()
    assert [h["new"] for h in history if h["field"] == "status" and h["version"] > 1] == [
        "in_repair"
    ]


async def test_a_conflict_defaults_to_keep_theirs_and_clears_the_retry_toast(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory(debounce_ms="300", reconnect_delays_ms="1500")
    phone = world.cases["phone"]
    alice = await windows(server, world, "alice")
    failed = asyncio.Event()

    async def first_save_fails(route: Any) -> None:
        if route.request.method == "PATCH" and not failed.is_set():
            failed.set()
            await route.abort()
        else:
            await route.continue_()

    await alice.page.route(f"**/api/cases/{phone}", first_save_fails)
    await alice.page.route(
        "**/locks/**",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "1"}, json={"error": "unavailable", "message": "x"}
        ),
    )
    await alice.type_into(phone, "customer_name", "Mine Version")
    retrying = alice.toasts.filter(has_text="Not saved yet")
    await expect(retrying.first).to_be_visible(timeout=WAIT_MS)
    async with api_as(server, "bob") as http:
        answer = await http.patch(
            f"/api/cases/{phone}", json={"changes": {"customer_name": "Theirs Version"}}
        )
        assert answer.status_code == 200, answer.text
    dialog = alice.page.locator("#conflict-dialog")
    await expect(dialog).to_be_visible(timeout=WAIT_MS)
    await expect(dialog.locator("[data-choice=theirs]")).to_be_focused()
    await expect(retrying).to_have_count(0, timeout=WAIT_MS)
    await alice.page.keyboard.press("Enter")  # the default: nothing of Bob's is lost
    await expect(dialog).to_be_hidden()
    await expect(alice.control(phone, "customer_name")).to_have_value("Theirs Version")
    assert (await server_case(server, phone))["customer_name"] == "Theirs Version"


async def test_only_editors_and_managers_are_offered_as_assignee(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    options = (
        await alice.control(world.cases["phone"], "assignee_id")
        .locator("option")
        .all_text_contents()
    )
    assert "Carol Diaz" not in options  # a viewer
    assert {"Alice Johnson", "Bob Smith", "Dave Kim"} <= set(options)


async def test_the_history_shows_what_changed_in_a_long_field(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone = world.cases["phone"]
    start = "The customer says the phone " + "was dropped once and " * 10 + "then stopped charging."
    added = " Also: the speaker crackles at full volume."
    async with api_as(server, "bob") as http:
        for notes in (start, start + added):
            answer = await http.patch(f"/api/cases/{phone}", json={"changes": {"notes": notes}})
            assert answer.status_code == 200, answer.text
    alice = await windows(server, world, "alice")
    await alice.page.locator(f'tr[data-case-id="{phone}"] .case-link').click()
    entry = alice.page.locator("#side-panel .timeline li").first
    await expect(entry).to_contain_text("changed Notes", timeout=WAIT_MS)
    await expect(entry.locator(".change-diff ins")).to_have_text(added)
    await expect(entry.locator(".change-diff del")).to_have_count(0)
    whole = entry.locator("details.change-full")
    await whole.locator("summary").click()
    await expect(whole).to_contain_text("speaker crackles at full volume.")


async def test_cut_off_values_read_in_a_tooltip_and_the_panel_without_a_lock(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone = world.cases["phone"]
    long_product = "Apple iPhone 14 Pro Max 256 GB Deep Purple with MagSafe case"
    async with api_as(server, "bob") as http:
        answer = await http.patch(
            f"/api/cases/{phone}",
            json={"changes": {"product": long_product, "customer_email": "john@example.com"}},
        )
        assert answer.status_code == 200
    alice = await windows(server, world, "alice")
    locks = lock_calls(alice)
    await alice.cell(phone, "product").hover()
    peek = alice.page.locator("#cell-peek")
    await expect(peek).to_be_visible(timeout=WAIT_MS)
    await expect(peek).to_have_text(long_product)
    # The keyboard gets it too, when a move lands on the cell.
    await into_grid(alice)
    await alice.page.keyboard.press("ArrowRight")
    await alice.page.keyboard.press("ArrowRight")
    await expect(peek).to_have_text(long_product)
    # The panel shows every field, the hidden columns' included.
    await alice.page.locator(f'tr[data-case-id="{phone}"] .case-link').click()
    panel = alice.page.locator("#side-panel")
    for field in (
        "customer_name",
        "customer_phone",
        "customer_email",
        "product",
        "serial_number",
        "purchase_date",
        "issue",
        "status",
        "priority",
        "assignee_id",
        "notes",
    ):
        await expect(panel.locator(f"#panel-{field}")).to_be_visible()
    await expect(panel.locator("#panel-customer_email")).to_have_value("john@example.com")
    await expect(panel.locator("#panel-product")).to_have_value(long_product)
    await asyncio.sleep(0.3)
    assert locks == []


@pytest.mark.parametrize("size", [(1366, 768), (768, 1024)])
async def test_the_columns_fit_the_screen_and_more_can_be_chosen(
    live_factory: LiveFactory, windows: Opener, size: tuple[int, int]
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    page = alice.page
    await page.set_viewport_size({"width": size[0], "height": size[1]})
    await page.wait_for_timeout(400)  # the resize refit is debounced

    async def overflow() -> list[str]:
        return await page.evaluate(
            """() => {
              const wrap = document.getElementById('table-wrap').getBoundingClientRect();
              return [...document.querySelectorAll('#cases-table thead th:not([hidden])')]
                .filter((th) => th.getBoundingClientRect().right > wrap.right + 0.5)
                .map((th) => th.dataset.col);
            }"""
        )

    assert await overflow() == []
    shown = await page.evaluate(
        "[...document.querySelectorAll('#cases-table thead th:not([hidden])')].length"
    )
    assert shown >= (10 if size[0] == 1366 else 5)
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await alice.shot(f"table-{size[0]}x{size[1]}")
    # The user may ask for a column the window has no room for; the choice is kept.
    await page.locator("#columns-button").click()
    await page.locator("#column-customer_email").check()
    await expect(alice.cell(world.cases["phone"], "customer_email")).to_be_visible()
    await page.reload()
    await expect(alice.cell(world.cases["phone"], "customer_email")).to_be_visible(timeout=WAIT_MS)
    await page.locator("#columns-button").click()
    await page.locator("#columns-fit").click()
    assert await overflow() == []


async def test_server_unreachable_says_so_retries_soon_and_has_retry_now(
    live_factory: LiveFactory, windows: Opener
) -> None:
    # Backoff steps long enough that only the probe can bring the tab back in time.
    server, world = live_factory(reconnect_delays_ms="500,1000,30000")
    alice = await windows(server, world, "alice")
    restarted: list[LiveServer] = []
    try:
        server.stop()
        pill = alice.pill
        await expect(pill).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
        await expect(pill).to_contain_text("Server unreachable", timeout=WAIT_MS)
        await expect(pill).not_to_contain_text("Offline")
        retry = alice.page.locator("#connection-retry")
        await expect(retry).to_be_visible()
        await asyncio.sleep(1.0)  # into the 30 s wait
        restart_on_same_port(server, restarted)
        back = asyncio.get_running_loop().time()
        await expect(pill).to_have_attribute("data-state", "connected", timeout=15_000)
        took = asyncio.get_running_loop().time() - back
        assert took < 15, f"back after {took:.1f} s (the backoff step was 30 s)"
        await expect(retry).to_be_hidden()

        # "Retry now" reconnects at once instead of waiting.
        restarted[0].stop()
        await expect(pill).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
        again = restart_on_same_port(server, restarted)
        assert again.process is not None
        await retry.click()
        await expect(pill).to_have_attribute("data-state", "connected", timeout=5_000)
    finally:
        for s in restarted:
            s.kill()


def add_cases(db: Path, count: int) -> None:
    """Many cases at once, copies of the first one, straight into the seeded database."""
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(warranty_cases)")]
        copied = [c for c in columns if c not in ("id", "case_number")]
        conn.execute(
            f"""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count})
            INSERT INTO warranty_cases (case_number, {", ".join(copied)})
            SELECT 'BULK-' || printf('%05d', i), {", ".join(copied)}
            FROM n, (SELECT * FROM warranty_cases ORDER BY id LIMIT 1)"""
        )


async def test_the_smaller_things(
    live_factory: LiveFactory, windows: Opener, tmp_path: Path
) -> None:
    add_cases(tmp_path / "live.db", 1000)
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    carol = await windows(server, world, "carol")
    # The count has a thousands separator (two cases of the seed are downtown's).
    await expect(alice.page.locator("#case-count")).to_have_text("1,002 cases", timeout=WAIT_MS)
    # The branch name shows once: the switcher lists only the other branches.
    switcher = alice.page.locator("#branch-switcher")
    await expect(switcher).to_be_visible()
    assert "Downtown" not in await switcher.locator("option").all_text_contents()
    assert await alice.page.get_by_text("Downtown", exact=True).count() == 1
    # A viewer is told.
    await expect(carol.page.locator("#view-only")).to_be_visible()
    await expect(alice.page.locator("#view-only")).to_be_hidden()
    # "Sign out" everywhere.
    await alice.page.locator("#user-menu-button").click()
    await expect(alice.page.locator("#logout")).to_have_text("Sign out")
    await alice.page.goto(f"{server.url}/")
    await expect(alice.page.locator("#logout")).to_have_text("Sign out")
    # An empty sign-in form says what is missing, not that something is wrong.
    await alice.page.locator("#logout").click()
    await alice.page.wait_for_url("**/login")
    await alice.page.locator("button[type=submit]").click()
    error = alice.page.locator("#login-error")
    await expect(error).to_have_text("Enter your email and password.")
    await alice.page.locator("input[name=email]").fill("alice@example.com")
    await alice.page.locator("button[type=submit]").click()
    await expect(error).to_have_text("Enter your password.")


# --- linkable cases, print, password ----------------------------------------------------------


async def test_a_case_has_a_link_that_opens_its_panel_and_survives_a_reload(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    laptop, downtown = world.cases["laptop"], world.branches["downtown"]
    alice = await windows(server, world, "alice")
    page = alice.page
    await page.locator(f'tr[data-case-id="{laptop}"] .case-link').click()
    await page.wait_for_url(f"**/branch/{downtown}/cases/{laptop}")
    link = await page.locator("#case-link").get_attribute("href")
    assert link == f"{server.url}/branch/{downtown}/cases/{laptop}"
    await page.reload()
    panel = page.locator("#side-panel")
    await expect(panel).to_be_visible(timeout=WAIT_MS)
    await expect(panel.locator("#panel-title")).to_have_text("Mia Wong")
    await panel.locator(".panel-close").click()
    await page.wait_for_url(f"**/branch/{downtown}")
    # Sent to a colleague: it opens straight there.
    bob = await windows(server, world, "bob")
    await bob.page.goto(link)
    await expect(bob.page.locator("#side-panel #panel-title")).to_have_text(
        "Mia Wong", timeout=WAIT_MS
    )
    answer = await bob.page.goto(f"{server.url}/branch/{downtown}/cases/{world.cases['airport']}")
    assert answer is not None and answer.status == 404


async def test_print_the_filtered_table_or_a_case_sheet(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone, laptop = world.cases["phone"], world.cases["laptop"]
    alice = await windows(server, world, "alice")
    page = alice.page
    await page.locator("#search").fill("Mia")
    await expect(page.locator(f'tr[data-case-id="{phone}"]')).to_be_hidden(timeout=WAIT_MS)
    await page.emulate_media(media="print")
    await expect(page.locator(".toolbar")).to_be_hidden()
    await expect(page.locator("#connection-status")).to_be_hidden()
    await expect(page.locator(f'tr[data-case-id="{laptop}"]')).to_be_visible()
    await expect(page.locator(f'tr[data-case-id="{phone}"]')).to_be_hidden()
    await expect(page.locator(".print-caption")).to_contain_text("matching “Mia”")
    await expect(page.locator("#case-sheet")).to_be_hidden()
    await page.emulate_media(media="screen")

    await page.evaluate(
        "() => { window.print = () => { window.__printed = (window.__printed || 0) + 1; }; }"
    )
    await page.locator(f'tr[data-case-id="{laptop}"] .case-link').click()
    await page.locator("#print-case").click()
    assert await page.evaluate("window.__printed") == 1
    await page.emulate_media(media="print")
    sheet = page.locator("#case-sheet")
    await expect(sheet).to_be_visible()
    await expect(page.locator("#cases-table")).to_be_hidden()
    await expect(sheet).to_contain_text("Mia Wong")
    await expect(sheet).to_contain_text("XPS 13")
    await expect(sheet.locator(".sheet-fields dt")).to_have_count(11)
    await expect(sheet.locator(".signature").first).to_have_text("Customer signature")
    await page.evaluate("window.dispatchEvent(new Event('afterprint'))")
    await expect(sheet).to_be_hidden()
    await page.emulate_media(media="screen")


async def test_a_password_change_from_the_page_signs_out_the_other_sessions(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    async with api_as(server, "alice") as elsewhere:
        page = alice.page
        await page.locator("#user-menu-button").click()
        await page.locator("#change-password").click()
        dialog = page.locator("#password-dialog")
        await expect(dialog).to_be_visible()
        await dialog.locator("#password-current").fill("wrong one")
        await dialog.locator("#password-new").fill("a new long secret")
        await dialog.locator("#password-again").fill("a new long secret")
        await dialog.locator("button[type=submit]").click()
        await expect(dialog.locator(".form-error")).to_have_text("Current password is not right.")
        await dialog.locator("#password-current").fill("pw-secret")
        await dialog.locator("button[type=submit]").click()
        await expect(dialog).to_be_hidden(timeout=WAIT_MS)
        await expect(alice.toasts.filter(has_text="Password changed.").first).to_be_visible()
        assert (await elsewhere.get("/api/me")).status_code == 401
    await expect(alice.pill).to_have_attribute("data-state", "connected")
    assert (await page.request.get(f"{server.url}/api/me")).status == 200
