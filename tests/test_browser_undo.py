"""Second chances in a real Chromium: undo, restore from history, the trash.

(docs/protocol.md, "Second chances", "Trash" and "Browser page: DOM hooks".)
One test walks the three with two people on the branch, so one server and
two browser contexts serve them all; the fixtures are those of test_browser.
"""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from conftest import LiveFactory
from test_browser import WAIT_MS, Opener, api_as, browser, open_pair, server_case, windows

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
__all__ = ["browser", "windows"]  # fixtures, used by name


async def test_undo_a_wrong_pick_restore_from_history_and_bring_a_case_back_from_the_trash(
    live_factory: LiveFactory, windows: Opener
) -> None:
    server, world = live_factory()
    phone, laptop = world.cases["phone"], world.cases["laptop"]
    alice, dave = await open_pair(windows, server, world, "alice", "dave")

    # A wrong status picked from the dropdown: Ctrl+Z brings it back in every tab.
    undo = alice.page.locator('[data-action="undo"]')
    await expect(undo).to_be_disabled()
    await alice.control(phone, "status").focus()
    await alice.control(phone, "status").select_option("in_repair")
    await expect(dave.control(phone, "status")).to_have_value("in_repair", timeout=WAIT_MS)
    await expect(undo).to_be_enabled()
    await alice.page.keyboard.press("Control+z")  # the dropdown still has the focus
    await expect(alice.control(phone, "status")).to_have_value("new", timeout=WAIT_MS)
    await expect(dave.control(phone, "status")).to_have_value("new", timeout=WAIT_MS)
    assert (await server_case(server, phone))["status"] == "new"
    undone = alice.patches_to(phone)[-1]
    assert undone.post_data_json == {
        "changes": {"status": "new"},
        "expected": {"status": "in_repair"},
    }
    # Redo with the button; then Bob changes it, and an undo names him and overwrites nothing.
    await alice.page.locator('[data-action="redo"]').click()
    await expect(dave.control(phone, "status")).to_have_value("in_repair", timeout=WAIT_MS)
    async with api_as(server, "bob") as bob:
        answer = await bob.patch(f"/api/cases/{phone}", json={"changes": {"status": "ready"}})
        assert answer.status_code == 200, answer.text
    await expect(alice.control(phone, "status")).to_have_value("ready", timeout=WAIT_MS)
    await alice.click_away()
    await undo.click()
    dialog = alice.page.locator("#conflict-dialog")
    await expect(dialog).to_be_visible(timeout=WAIT_MS)
    await expect(dialog).to_contain_text("Bob Smith changed Status")
    await expect(dialog.locator(".conflict-value.theirs")).to_contain_text("Ready")
    await dialog.locator("[data-choice=theirs]").click()
    await expect(dialog).to_be_hidden()
    assert (await server_case(server, phone))["status"] == "ready"

    # Restore a value from the timeline: "in_repair", Alice's entry, comes back as a restore of it.
    await alice.page.locator(f'tr[data-case-id="{phone}"] .case-link').click()
    entries = alice.page.locator("#side-panel .history-entry")
    picked = entries.filter(has_text="Alice Johnson").filter(has_text="In repair").last
    entry_id = await picked.get_attribute("data-entry-id")
    await picked.locator('[data-action="restore"]').click()
    await expect(dave.control(phone, "status")).to_have_value("in_repair", timeout=WAIT_MS)
    await expect(entries.first).to_contain_text(f"restored Status from entry #{entry_id}")
    history = await (
        await alice.context.request.get(f"{server.url}/api/cases/{phone}/history")
    ).json()
    assert history[0]["restored_from"] == int(entry_id or 0)
    # The oldest entry of the field also brings back the value before it: the default.
    await picked.locator('[data-action="restore-old"]').click()
    await expect(dave.control(phone, "status")).to_have_value("new", timeout=WAIT_MS)
    await entries.first.scroll_into_view_if_needed()
    await alice.shot("history-restore")
    await alice.page.locator(".panel-close").click()

    # A manager deletes a case and brings it back; Alice, on the branch, sees it go and return.
    await expect(alice.page.locator('[data-action="open-trash"]')).to_be_hidden()
    await dave.page.locator(f'tr[data-case-id="{laptop}"] .case-link').click()
    await dave.page.locator("#side-panel .btn-danger").click()
    await dave.page.locator(".confirm-dialog .btn-danger").click()
    await expect(alice.page.locator(f'tr[data-case-id="{laptop}"]')).to_have_count(
        0, timeout=WAIT_MS
    )
    await dave.page.locator('[data-action="open-trash"]').click()
    deleted = dave.page.locator(f'#trash [data-case-id="{laptop}"]')
    await expect(deleted).to_contain_text("Deleted by Dave Kim", timeout=WAIT_MS)
    await dave.shot("trash")
    await deleted.locator('[data-action="restore-case"]').click()
    await expect(deleted).to_have_count(0, timeout=WAIT_MS)
    for window in (alice, dave):
        await expect(window.control(laptop, "customer_name")).to_have_value(
            "Mia Wong", timeout=WAIT_MS
        )
    await alice.shot("trash-restored")
