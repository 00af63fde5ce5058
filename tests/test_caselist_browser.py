"""A branch with thousands of cases in Chromium (docs/protocol.md, "Listing cases").

The cases are seeded through ``warrantysync cases import`` as an operator
would. One test walks what a person meets: the open work only, at most a
window of rows in the DOM, more on scroll and from the keyboard, a search
that finds a case far down, a remote edit to a visible row, a remote new
case that matches, a manager's import (its report of bad rows, then a burst
of new cases that ends in the "N new cases match — show" notice).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path
from subprocess import PIPE

import pytest
from playwright.async_api import FilePayload, Page, expect

import test_browser
from conftest import LiveFactory
from live import LiveServer
from test_browser import WAIT_MS, Opener, api_as

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]
browser = test_browser.browser
windows = test_browser.windows

ROWS = 2000
MAX_DOM_ROWS = 500  # caselist.js MAX_ROWS
IMPORTED = 30  # more than a burst inserts (caselist.js BURST_INSERTS): the rest wait in the notice
OPEN = ["new", "diagnosing", "awaiting_parts", "in_repair", "ready"]


def seed_csv(path: Path) -> Path:
    """ROWS open cases, one in three closed; the last one has a serial number to find."""
    lines = ["customer_name,product,serial_number,status"]
    for n in range(ROWS):
        status = "closed" if n % 3 == 2 else "new"
        serial = "NEEDLE-77" if n == 0 else f"SN{n:05d}"
        lines.append(f"Bulk customer {n},Kettle,{serial},{status}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


async def cli_import(server: LiveServer, branch_id: int, path: Path) -> str:
    env = {**os.environ, **server.env}
    env.pop("WARRANTYSYNC_REDIS_URL", None)
    args = ["-m", "warrantysync", "cases", "import", "--branch", str(branch_id), str(path)]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, env=env, stdout=PIPE, stderr=PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (out + err).decode()
    return out.decode()


def csv_upload(data: bytes) -> FilePayload:
    return {"name": "cases.csv", "mimeType": "text/csv", "buffer": data}


async def more_rows_than(page: Page, count: int) -> None:
    await page.wait_for_function(
        "(n) => document.querySelectorAll('#cases-table tbody tr[data-case-id]').length > n",
        arg=count,
        timeout=WAIT_MS,
    )


async def test_a_branch_of_thousands_pages_searches_and_stays_live(
    live_factory: LiveFactory, windows: Opener, tmp_path: Path
) -> None:
    server, world = live_factory()
    downtown = world.branches["downtown"]
    assert f"imported {ROWS:,} cases" in await cli_import(
        server, downtown, seed_csv(tmp_path / "bulk.csv")
    )
    alice = await windows(server, world, "alice")
    page = alice.page
    rows = page.locator("#cases-table tbody tr[data-case-id]")
    count = page.locator("#case-count")

    # The open work only, newest first, one page of it.
    await expect(count).not_to_have_text("", timeout=WAIT_MS)
    async with api_as(server, "alice") as http:
        answer = await http.get(
            f"/api/branches/{downtown}/cases", params={"limit": 1, "status": OPEN}
        )
        open_total = answer.json()["total"]
        everything = await http.get(f"/api/branches/{downtown}/cases", params={"limit": 1})
    assert open_total < everything.json()["total"]
    await expect(count).to_have_text(f"{open_total:,} cases")
    statuses = await page.eval_on_selector_all(
        "#cases-table tbody [data-field=status] select", "els => els.map((e) => e.value)"
    )
    assert statuses and not {"closed", "rejected"} & set(statuses)
    first_page = await rows.count()
    assert 0 < first_page < open_total

    # Scrolling loads more, and the DOM never holds more than a window.
    for _ in range(12):
        await page.locator("#table-wrap").evaluate("(el) => { el.scrollTop = el.scrollHeight; }")
        await page.wait_for_timeout(150)
    await more_rows_than(page, first_page)
    assert await rows.count() <= MAX_DOM_ROWS

    # The search runs on the server: it finds the very first (oldest) case.
    await page.locator("#search").fill("needle-77")
    await expect(rows).to_have_count(1, timeout=WAIT_MS)
    await expect(rows.first.locator("[data-field=serial_number] input")).to_have_value("NEEDLE-77")
    await expect(count).to_have_text("1 case")
    await page.locator("#search").fill("")
    await more_rows_than(page, 1)

    # The keyboard past the last row loaded loads the next page.
    loaded = await rows.count()
    await rows.last.locator(".case-link").focus()
    await page.keyboard.press("ArrowDown")
    await more_rows_than(page, loaded)
    # Resting at the top of the list, out of the grid: new cases may appear at once.
    await page.locator("#search").focus()
    await page.locator("#table-wrap").evaluate("(el) => { el.scrollTop = 0; }")

    # A remote edit to a visible row appears in place.
    top = int(await rows.first.get_attribute("data-case-id") or 0)
    async with api_as(server, "bob") as http:
        answer = await http.patch(
            f"/api/cases/{top}", json={"changes": {"customer_name": "Renamed by Bob"}}
        )
        assert answer.status_code == 200, answer.text
    await expect(alice.cell(top, "customer_name").locator("input")).to_have_value(
        "Renamed by Bob", timeout=WAIT_MS
    )

    # A remote new case that matches the view takes its place at the top.
    async with api_as(server, "bob") as http:
        answer = await http.post(
            f"/api/branches/{downtown}/cases", json={"customer_name": "Walk-in Zed"}
        )
        assert answer.status_code == 201, answer.text
        new_id = answer.json()["id"]
    await expect(page.locator(f'tr[data-case-id="{new_id}"]')).to_be_visible(timeout=WAIT_MS)
    await expect(count).to_have_text(f"{open_total + 1:,} cases")
    # A manager imports a spreadsheet: a bad row is reported and nothing is written...
    dave = await windows(server, world, "dave")
    bad = b"customer_name,customer_email\nGood One,\nBad One,not-an-email\n"
    await dave.page.set_input_files("#import-file", files=[csv_upload(bad)])
    await expect(dave.page.locator('#import-dialog li[data-line="3"]')).to_contain_text(
        "customer_email", timeout=WAIT_MS
    )
    # ...a good file goes in whole, and Alice's tab takes the burst without a reload.
    good = ("customer_name\n" + "".join(f"Imported {n}\n" for n in range(IMPORTED))).encode()
    await dave.page.set_input_files("#import-file", files=[csv_upload(good)])
    await dave.page.locator("#import-go").click()
    await expect(dave.toasts.filter(has_text=f"Imported {IMPORTED} cases").first).to_be_visible(
        timeout=WAIT_MS
    )
    total = open_total + 1 + IMPORTED
    await expect(count).to_have_text(f"{total:,} cases", timeout=WAIT_MS)
    notice = page.locator("#new-cases")
    await expect(notice).to_have_text(re.compile(r"^\d+ new cases? match — show$"))
    await notice.click()
    await expect(notice).to_be_hidden(timeout=WAIT_MS)
    await expect(rows.first.locator("[data-field=customer_name] input")).to_have_value(
        f"Imported {IMPORTED - 1}", timeout=WAIT_MS
    )

    # Export offers exactly what is shown.
    href = await page.locator("#export-csv").get_attribute("href") or ""
    assert href.startswith(f"/api/branches/{downtown}/cases.csv?") and "status=new" in href
    assert alice.errors == []
