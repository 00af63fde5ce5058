"""A branch with years of cases beside the 25-case demo branch, on one server.

The demo's two branches are loaded (25 cases each); ``rows`` cases are then
imported into the second through ``warrantysync cases import``, as an
operator would, and both branches are measured side by side in the same run:

* the import's time and the export's rate (the whole branch as CSV);
* the first window the page asks for (its size) and the page's first rows
  interactive in Chromium, and the tab's JS heap after a garbage collection;
* a periodic sync that finds nothing changed (a 304), its time at the client;
* server-side search over the large branch, p95 of terms that match a few
  cases far down the list.

docs/performance.md explains the figures; bench/report.py judges them.
"""

from __future__ import annotations

import csv
import io
import random
import re
import time
from pathlib import Path
from typing import Any

import httpx
from common import log, percentile
from targets import WarrantySync

DEMO = 1  # the demo's Downtown: 25 cases
LARGE = 2  # the demo's Airport, grown by the import
EMAIL = "alice@example.com"
PASSWORD = "demo"
OPEN = ("new", "diagnosing", "awaiting_parts", "in_repair", "ready")
CHROMIUM = "/usr/bin/chromium"
SYNCS = 200
SEARCHES = 60
PAGE_LOADS = 5


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` cases of four years: most closed, a few hundred open."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        ["customer_name", "customer_phone", "customer_email", "product", "serial_number",
         "status", "priority", "issue"]
    )  # fmt: skip
    for n in range(rows):
        status = rng.choice(OPEN) if rng.random() < 0.02 else rng.choice(("closed", "rejected"))
        writer.writerow(
            [f"Customer {n:06d}", f"(555) 01{n % 100:02d}-{n % 10000:04d}",
             f"customer{n}@example.com", rng.choice(("Kettle", "Laptop", "Phone", "Toaster")),
             f"SN-{n:07d}", status, rng.choice(("low", "normal", "high")),
             "Does not switch on after a week of use."]
        )  # fmt: skip
    path.write_text(out.getvalue(), encoding="utf-8")


def page_query(limit: int = 40) -> list[tuple[str, str]]:
    """What the bundled page asks first (caselist.js FIRST_PAGE): the open work, newest first."""
    return [*(("status", s) for s in OPEN), ("sort", "-case_number"), ("limit", str(limit))]


def timed(work: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        start = time.perf_counter()
        work()
        times.append((time.perf_counter() - start) * 1000)
    return times


def sync_ms(http: httpx.Client, branch: int) -> float:
    """Median time of a 304 periodic sync of the page's first window."""
    url = f"/api/branches/{branch}/cases"
    first = http.get(url, params=page_query())
    etag = first.headers["ETag"]

    def once() -> None:
        answer = http.get(url, params=page_query(), headers={"If-None-Match": etag})
        assert answer.status_code == 304, answer.status_code

    return percentile(timed(once, SYNCS), 50)


def search_p95(http: httpx.Client, rows: int) -> float:
    rng = random.Random(3)
    url = f"/api/branches/{LARGE}/cases"

    def once() -> None:
        n = rng.randrange(rows)
        term = rng.choice((f"SN-{n:07d}", f"Customer {n:06d}", f"customer{n}@"))
        answer = http.get(url, params=[("q", term), ("sort", "-case_number"), ("limit", "100")])
        assert answer.status_code == 200 and answer.json()["total"] >= 1, term

    return percentile(timed(once, SEARCHES), 95)


def export_rate(http: httpx.Client) -> float:
    start = time.perf_counter()
    lines = 0
    with http.stream("GET", f"/api/branches/{LARGE}/cases.csv") as answer:
        answer.raise_for_status()
        for chunk in answer.iter_bytes():
            lines += chunk.count(b"\n")
    return (lines - 1) / (time.perf_counter() - start)


def browser(url: str) -> dict[str, dict[str, float]]:
    """First rows interactive and the JS heap, for both branches, in one Chromium."""
    from playwright.sync_api import sync_playwright

    figures: dict[str, dict[str, float]] = {}
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = chromium.new_context(viewport={"width": 1366, "height": 768})
            page = context.new_page()
            page.goto(f"{url}/login")
            page.locator("input[name=email]").fill(EMAIL)
            page.locator("input[name=password]").fill(PASSWORD)
            page.locator("button[type=submit]").click()
            page.wait_for_url("**/")
            cdp = context.new_cdp_session(page)
            for name, branch in (("demo", DEMO), ("large", LARGE)):
                loads = []
                for _ in range(PAGE_LOADS):
                    start = time.perf_counter()
                    page.goto(f"{url}/branch/{branch}")
                    # Interactive: rows drawn and the grid's tab stop on a cell.
                    page.locator('#cases-table tbody [tabindex="0"]').first.wait_for()
                    page.locator("#case-count").filter(has_text="case").wait_for()
                    loads.append((time.perf_counter() - start) * 1000)
                page.wait_for_timeout(500)
                cdp.send("HeapProfiler.collectGarbage")
                heap = cdp.send("Runtime.getHeapUsage")["usedSize"] / 1024
                figures[name] = {"first_rows_ms": min(loads), "heap_kib": heap}
        finally:
            chromium.close()
    return figures


def run(logs: Path, rows: int) -> dict[str, Any]:
    target = WarrantySync(logs, suffix="-large", setup=False)
    target.cli("db", "upgrade")
    target.cli("demo")
    data = target.dir / "large.csv"
    write_csv(data, rows)
    start = time.perf_counter()
    out = target.cli("cases", "import", "--branch", str(LARGE), str(data))
    import_s = time.perf_counter() - start
    log(f"large: {out} ({import_s:.1f} s end to end)")
    # The import's own time, as the command reports it (without Python's start-up).
    said = re.search(r"in ([0-9.]+) s", out)
    target.case_id = 1  # the demo's cases are there: start() need not create one
    target.start()
    try:
        with httpx.Client(base_url=target.url, timeout=60) as http:
            login = http.post("/api/auth/login", json={"email": EMAIL, "password": PASSWORD})
            login.raise_for_status()
            sizes = {
                name: len(http.get(f"/api/branches/{b}/cases", params=page_query()).content)
                for name, b in (("demo", DEMO), ("large", LARGE))
            }
            whole_demo = len(http.get(f"/api/branches/{DEMO}/cases").content)
            result: dict[str, Any] = {
                "rows": rows,
                "import_s": float(said.group(1)) if said else import_s,
                "import_end_to_end_s": import_s,
                "first_window_bytes": sizes,
                "demo_snapshot_bytes": whole_demo,
                "sync_304_ms": {"demo": sync_ms(http, DEMO), "large": sync_ms(http, LARGE)},
                "search_p95_ms": search_p95(http, rows),
                "export_rows_per_s": export_rate(http),
            }
        result["browser"] = browser(target.url)
        log(f"large: {result}")
        return result
    finally:
        target.stop()
