"""axe-core in Chromium: no violation on any page or dialog a person meets.

axe.min.js comes from the npm package that `make test` installs into
tests/js/node_modules (`make axe`); it is injected into each page in the
state being checked: sign-in, the branch list, the table, the side panel and
every dialog. All of axe's default rules run (WCAG 2 A/AA and best
practices, contrast included).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, expect

import test_browser
from conftest import LiveFactory
from test_browser import WAIT_MS, Opener, Window, api_as

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
browser = test_browser.browser
windows = test_browser.windows

AXE = Path(__file__).parent / "js" / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{AXE} missing -- `make test` installs it (`make axe`)")
        pytest.skip(f"{AXE} missing: run `make axe`")
    return AXE.read_text()


async def violations(page: Page, axe_source: str) -> list[str]:
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=axe_source)
    found: list[dict[str, Any]] = await page.evaluate(
        "async () => (await axe.run(document, { resultTypes: ['violations'] })).violations"
        ".map((v) => ({ id: v.id, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }))"
    )
    return [f"{v['id']}: {v['help']} at {v['nodes']}" for v in found]


async def assert_clean(page: Page, axe_source: str, state: str) -> None:
    found = await violations(page, axe_source)
    assert found == [], f"{state}: {found}"


async def test_sign_in_and_branch_list_have_no_violations(
    live_factory: LiveFactory, windows: Opener, axe_source: str
) -> None:
    server, world = live_factory()
    alice = await windows(server, world, "alice")
    page = alice.page
    await page.goto(f"{server.url}/")
    await expect(page.locator(".branch-list")).to_be_visible()
    await assert_clean(page, axe_source, "branch list")
    await page.context.clear_cookies()
    await page.goto(f"{server.url}/login")
    await assert_clean(page, axe_source, "sign-in")
    await page.locator("button[type=submit]").click()
    await expect(page.locator("#login-error")).to_be_visible()
    await assert_clean(page, axe_source, "sign-in with an error")


async def check_table_states(window: Window, axe_source: str, case_id: int) -> None:
    page = window.page
    await assert_clean(page, axe_source, f"table ({window.who})")
    await page.locator(f'tr[data-case-id="{case_id}"] .case-link').click()
    await expect(page.locator("#side-panel .timeline li").first).to_be_visible(timeout=WAIT_MS)
    await assert_clean(page, axe_source, f"panel ({window.who})")
    await page.locator("#side-panel .panel-close").click()
    await page.keyboard.press("?")
    await expect(page.locator("#shortcuts-dialog")).to_be_visible()
    await assert_clean(page, axe_source, "shortcuts dialog")
    await page.keyboard.press("Escape")
    await page.locator("#user-menu-button").click()
    await assert_clean(page, axe_source, "user menu")
    await page.locator("#change-password").click()
    await expect(page.locator("#password-dialog")).to_be_visible()
    await assert_clean(page, axe_source, "password dialog")
    await page.keyboard.press("Escape")
    await page.locator("#columns-button").click()
    await assert_clean(page, axe_source, "columns menu")
    await page.keyboard.press("Escape")


async def test_table_panel_and_dialogs_have_no_violations(
    live_factory: LiveFactory, windows: Opener, axe_source: str
) -> None:
    server, world = live_factory(debounce_ms="5000")
    phone = world.cases["phone"]
    dave, alice = await test_browser.open_pair(windows, server, world, "dave", "alice")
    # A lock held by someone else is on screen too, as it is all day.
    await alice.control(phone, "customer_name").click()
    await expect(dave.cell(phone, "customer_name")).to_have_attribute(
        "data-locked-by", "Alice Johnson", timeout=WAIT_MS
    )
    await check_table_states(dave, axe_source, phone)

    page = dave.page
    await page.locator("#new-case").click()
    await expect(page.locator("#new-case-dialog")).to_be_visible()
    await assert_clean(page, axe_source, "new case dialog")
    await page.keyboard.press("Escape")
    await page.locator(f'tr[data-case-id="{world.cases["laptop"]}"] .case-link').click()
    await page.locator("#side-panel .btn-danger").click()
    await expect(page.locator(".confirm-dialog")).to_be_visible()
    await assert_clean(page, axe_source, "delete confirmation")
    await page.keyboard.press("Escape")

    # The conflict dialog: a save that meets a newer value (locks unavailable).
    await alice.click_away()
    await alice.page.route(
        "**/locks/**",
        lambda route: route.fulfill(
            status=503, headers={"Retry-After": "1"}, json={"error": "unavailable", "message": "x"}
        ),
    )
    await alice.type_into(phone, "product", "Mine")
    async with api_as(server, "bob") as http:
        answer = await http.patch(f"/api/cases/{phone}", json={"changes": {"product": "Theirs"}})
        assert answer.status_code == 200
    await alice.click_away()
    await expect(alice.page.locator("#conflict-dialog")).to_be_visible(timeout=WAIT_MS)
    await assert_clean(alice.page, axe_source, "conflict dialog")
    await alice.page.keyboard.press("Enter")


async def test_a_viewers_table_has_no_violations(
    live_factory: LiveFactory, windows: Opener, axe_source: str
) -> None:
    server, world = live_factory()
    carol = await windows(server, world, "carol")
    await assert_clean(carol.page, axe_source, "viewer's table")
    await carol.page.locator(f'tr[data-case-id="{world.cases["phone"]}"] .case-link').click()
    await assert_clean(carol.page, axe_source, "viewer's panel")
