"""User text is rendered as text everywhere — checked in Chromium.

Every free-text field of a case, the branch name and the name of the user
who edits, locks and deletes it carry markup payloads. The branch page is
opened in Debian's Chromium (never a downloaded browser) and must show each
payload literally in the table, the side panel, the history, the lock
tooltip and the toast, without running any of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attack import Caller, live_server, run_admin, sign_in
from chromium import CHROMIUM, CHROMIUM_ARGS
from factories import PASSWORD

pytestmark = pytest.mark.browser

IMG = '<img src=x onerror="window.__xss=1">'
SCRIPT = "</script><script>window.__xss=1</script>"
SHORT = "<svg onload=window.__xss=1>"  # fits customer_phone's 40 characters
MALLORY = f"{IMG}{SCRIPT}"

# Every free-text field; customer_email only takes valid addresses, which
# cannot carry markup, and the rest are enums, dates and ids.
FIELDS = {
    "customer_name": IMG,
    "customer_phone": SHORT,
    "product": SCRIPT,
    "serial_number": IMG,
    "issue": f"{SCRIPT}\n{IMG}",
    "notes": f"{IMG} & {SCRIPT} &amp; &lt;b&gt;",
}
UPDATED = {"notes": f"{SCRIPT} second {IMG}", "customer_name": SCRIPT}


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def xss_case(tmp_path: Path, migrated_template: Path) -> Iterator[tuple[str, int, int, Caller]]:
    """(server url, branch id, case id, Mallory) — made before the browser starts,
    since Playwright's sync API owns the thread's event loop from then on."""
    with live_server(tmp_path, migrated_template, lock_ttl="60") as (server, _world, url):
        branch = run_admin(url, "create_branch", name=f"Branch {IMG}")
        run_admin(url, "create_user", email="mallory@example.com", name=MALLORY, password=PASSWORD)
        run_admin(
            url, "add_member", email="mallory@example.com", branch_id=branch.id, role="manager"
        )
        run_admin(url, "add_member", email="alice@example.com", branch_id=branch.id, role="editor")
        mallory = sign_in(server.url, "mallory@example.com")
        made = mallory.http.post(
            f"/api/branches/{branch.id}/cases", json=FIELDS, headers=mallory.headers()
        )
        assert made.status_code == 201, made.text
        case = made.json()["id"]
        edited = mallory.http.patch(
            f"/api/cases/{case}", json={"changes": UPDATED}, headers=mallory.headers()
        )
        assert edited.status_code == 200, edited.text
        locked = mallory.http.put(
            f"/api/cases/{case}/locks/product", headers=mallory.headers("mallory-tab")
        )
        assert locked.status_code == 200
        yield server.url, branch.id, case, mallory
        mallory.http.close()


def test_payloads_show_literally_and_never_run(
    xss_case: tuple[str, int, int, Caller], chromium: Any
) -> None:
    base, branch, case, mallory = xss_case
    shown = {**FIELDS, **UPDATED}
    alice = sign_in(base, "alice@example.com")
    context = chromium.new_context(viewport={"width": 1366, "height": 768})
    context.add_cookies([{"name": "warrantysync_session", "value": alice.token, "url": base}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/branch/{branch}")
    row = page.locator(f'tr[data-case-id="{case}"]')
    row.wait_for(timeout=15000)

    # The table: each control holds the payload as its value.
    for field in ("customer_name", "customer_phone", "serial_number"):
        control = row.locator(f'[data-field="{field}"] input, [data-field="{field}"] textarea')
        assert control.first.input_value() == shown[field], field
    # The lock of a user whose name is markup: tooltip and attribute, as text.
    holder = row.locator("[data-locked-by]").first
    holder.wait_for(timeout=10000)
    assert holder.get_attribute("data-locked-by") == MALLORY
    title = holder.get_attribute("title") or ""
    assert title.startswith(f"Locked by {MALLORY} · idle "), title  # then its timing
    assert IMG in page.locator("body").inner_text()  # the branch name, as text

    # The side panel: long fields and the history timeline.
    row.locator(".case-link").click()
    panel = page.locator("#side-panel")
    panel.wait_for(state="visible")
    assert panel.locator("#panel-title").inner_text() == shown["customer_name"]
    assert panel.locator("#panel-issue").input_value() == shown["issue"]
    assert panel.locator("#panel-notes").input_value() == shown["notes"]
    timeline = panel.locator(".timeline")
    timeline.locator("li").first.wait_for(timeout=10000)
    history_text = timeline.inner_text()
    assert MALLORY in history_text
    assert SCRIPT in history_text and IMG in history_text

    # A toast that names the user: Mallory deletes the case Alice has open.
    deleted = mallory.http.delete(f"/api/cases/{case}", headers=mallory.headers())
    assert deleted.status_code == 204
    toast = page.locator("#toasts .toast", has_text="deleted this case")
    toast.first.wait_for(timeout=10000)
    assert toast.first.inner_text().startswith(MALLORY)

    # Nothing ran, and no payload became an element.
    assert page.evaluate("window.__xss") is None
    assert page.locator('img[src="x"], svg[onload]').count() == 0
    scripts = page.evaluate("[...document.scripts].map(s => s.src || s.type || 'inline')")
    assert all(s.endswith(".js") or s == "application/json" for s in scripts), scripts
    assert errors == []
    context.close()
    alice.http.close()
