"""The documented nginx config, run by Debian's nginx in front of a real server.

docs/deployment.md ("4. nginx") shows docs/nginx/warrantysync.conf verbatim;
tests/nginx.py runs that file with only its addresses, ports and certificate
paths changed: TLS with HTTP/2 on a free port that is not 443, which is what
makes the browser's ``Origin`` carry a port. Chromium reaches it under the
config's server name (mapped to 127.0.0.1), signs in, edits, and a second
browser sees the edit over its event stream through the proxy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from chromium import CHROMIUM, CHROMIUM_ARGS
from conftest import LiveFactory
from factories import PASSWORD
from live import LiveServer
from nginx import DOCUMENTED_CONFIG, SERVER_NAME, NginxServer

ROOT = Path(__file__).resolve().parent.parent
WAIT_MS = 15_000  # any single expectation, on a loaded 2-core machine

NginxFactory = Callable[[LiveServer], NginxServer]


def test_the_deployment_guide_shows_the_config_file_verbatim() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    blocks = re.findall(r"^```nginx\n(.*?)^```$", guide, flags=re.DOTALL | re.MULTILINE)
    assert blocks == [DOCUMENTED_CONFIG.read_text()]


async def _sign_in(browser: Browser, base: str, branch_id: int, email: str) -> Page:
    context = await browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(WAIT_MS)
    page = await context.new_page()
    await page.goto(f"{base}/branch/{branch_id}")
    await page.locator("input[name=email]").fill(email)
    await page.locator("input[name=password]").fill(PASSWORD)
    await page.locator("button[type=submit]").click()
    await page.wait_for_url(f"{base}/branch/{branch_id}")
    await expect(page.locator("#connection-status")).to_have_attribute("data-state", "connected")
    return page


def _notes(page: Page, case_id: int) -> Locator:
    # Issue, not notes: a window of 1280 px has no room for the notes column.
    cell = page.locator(f'tr[data-case-id="{case_id}"] [data-field="issue"]')
    return cell.locator("input, select, textarea")


@pytest.mark.nginx
@pytest.mark.browser
async def test_a_browser_signs_in_and_edits_through_nginx_on_a_port_that_is_not_443(
    live_factory: LiveFactory, nginx_factory: NginxFactory
) -> None:
    # Set explicitly: the tests must not depend on the default of TRUSTED_PROXIES.
    server, world = live_factory(trusted_proxies="127.0.0.1")
    nginx = nginx_factory(server)
    base = f"https://{SERVER_NAME}:{nginx.port}"
    downtown, phone = world.branches["downtown"], world.cases["phone"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP {SERVER_NAME} 127.0.0.1"],
        )
        try:
            alice = await _sign_in(browser, base, downtown, "alice@example.com")
            bob = await _sign_in(browser, base, downtown, "bob@example.com")
            protocol = await alice.evaluate(
                "performance.getEntriesByType('navigation')[0].nextHopProtocol"
            )
            assert protocol == "h2"
            cookie = next(
                c for c in await alice.context.cookies() if c["name"] == "warrantysync_session"
            )
            assert cookie["secure"] is True  # the node believed nginx's X-Forwarded-Proto

            await _notes(alice, phone).click()
            await alice.keyboard.press("Control+A")
            await alice.keyboard.type("Saved through nginx", delay=10)
            await alice.locator(".branch-name").click()
            await expect(_notes(bob, phone)).to_have_value("Saved through nginx", timeout=WAIT_MS)
        finally:
            await browser.close()

    async with httpx.AsyncClient(base_url=server.url, timeout=10) as direct:
        login = await direct.post(
            "/api/auth/login", json={"email": "dave@example.com", "password": PASSWORD}
        )
        assert login.status_code == 200, login.text
        saved = (await direct.get(f"/api/cases/{phone}")).json()
        assert saved["issue"] == "Saved through nginx"
    assert ' HTTP/2.0" ' in nginx.access_log()


@pytest.mark.nginx
def test_readyz_and_metrics_answer_directly_but_not_through_nginx(
    live_factory: LiveFactory, nginx_factory: NginxFactory
) -> None:
    server, _world = live_factory(trusted_proxies="127.0.0.1")
    nginx = nginx_factory(server)
    with httpx.Client(timeout=10) as direct:
        assert direct.get(f"{server.url}/readyz").status_code == 200
        assert direct.get(f"{server.url}/metrics").status_code == 200
    outside = f"https://127.0.0.1:{nginx.port}"
    with httpx.Client(verify=False, timeout=10) as http:
        assert http.get(f"{outside}/healthz").status_code == 200  # the proxy itself works
        for path in ("/readyz", "/metrics", "/readyz?full=1", "/%6Detrics", "//metrics"):
            answer = http.get(httpx.URL(outside + path))
            assert answer.status_code == 403, (path, answer.status_code, answer.text[:200])
        # The app redirects /metrics/ to /metrics, which nginx refuses again.
        answer = http.get(f"{outside}/metrics/", follow_redirects=True)
        assert answer.status_code == 403, answer.text[:200]
