"""No open redirect after sign-in, against a running server and in Chromium.

``/login?next=/%09/evil.example/`` used to send a signed-in browser to
evil.example: a tab (or newline, or carriage return) passed the "starts with
one slash" check, and the browser drops it, leaving ``//evil.example/``. The
payloads are shared with the Node test of the browser's check
(tests/js/next-payloads.json); both the server's redirect and the sign-in
page's script must keep every one of them on the origin.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx
import pytest

from attack import Caller, live_server, sign_in
from chromium import CHROMIUM, CHROMIUM_ARGS
from factories import PASSWORD, World
from live import LiveServer

Live = tuple[LiveServer, World, str]
PAYLOADS = json.loads((Path(__file__).parent.parent / "js" / "next-payloads.json").read_text())
UNSAFE: list[str] = PAYLOADS["unsafe"]
SAFE: dict[str, str] = PAYLOADS["safe"]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("redirect"), migrated_template) as started:
        yield started


@pytest.fixture(scope="module")
def alice(site: Live) -> Iterator[Caller]:
    caller = sign_in(site[0].url, "alice@example.com")
    yield caller
    caller.http.close()


def _stays_home(base: str, location: str) -> bool:
    return urlsplit(urljoin(base + "/login", location)).netloc == urlsplit(base).netloc


@pytest.mark.parametrize("payload", UNSAFE, ids=repr)
def test_the_server_never_redirects_a_signed_in_user_away(
    site: Live, alice: Caller, payload: str
) -> None:
    server = site[0]
    response = alice.http.get("/login", params={"next": payload}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/", response.headers["location"]
    # Signed out, the page hands the same value to its script: also "/".
    with httpx.Client(base_url=server.url) as anonymous:
        page = anonymous.get("/login", params={"next": payload}).text
    assert 'data-next="/"' in page


@pytest.mark.parametrize(("payload", "expected"), list(SAFE.items()))
def test_same_origin_paths_are_still_followed(
    site: Live, alice: Caller, payload: str, expected: str
) -> None:
    response = alice.http.get("/login", params={"next": payload}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == expected
    assert _stays_home(site[0].url, response.headers["location"])


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


def _sign_in_through_the_page(chromium: Any, base: str, payload: str, *, as_served: bool) -> str:
    """Sign in with the page's form at /login?next=payload; returns where it lands."""
    home = urlsplit(base).netloc
    context = chromium.new_context()
    page = context.new_page()
    foreign: list[str] = []

    def refuse(route: Any) -> None:
        if urlsplit(route.request.url).netloc != home:
            foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", refuse)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{base}/login?next={quote(payload, safe='')}")
    if not as_served:
        # Empty data-next, as an older or cached page would have it: the
        # script then reads ?next= itself, and only its own check stands.
        page.eval_on_selector("#login-form", "form => { form.dataset.next = ''; }")
    page.fill("input[name=email]", "alice@example.com")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_navigation(timeout=15000):
        page.click("button[type=submit]")
    page.wait_for_load_state()
    landed = page.url
    context.close()
    assert foreign == [], (payload, foreign)
    assert errors == [], errors
    assert urlsplit(landed).netloc == home, (payload, landed)
    return urlsplit(landed).path


def _where_the_script_goes(page: Any, base: str, payload: str) -> str:
    """The first navigation the page's script starts after a successful sign-in."""
    page.goto(f"{base}/login?next={quote(payload, safe='')}")
    # Empty data-next, as an older or cached page would have it: the script
    # then reads ?next= itself, and only its own check stands.
    page.eval_on_selector("#login-form", "form => { form.dataset.next = ''; }")
    page.fill("input[name=email]", "alice@example.com")
    page.fill("input[name=password]", PASSWORD)
    with page.expect_request(lambda request: request.is_navigation_request()) as went:
        page.click("button[type=submit]")
    url: str = went.value.url
    return url


@pytest.mark.browser
def test_the_sign_in_page_never_sends_the_browser_away(site: Live, chromium: Any) -> None:
    base = site[0].url
    home = urlsplit(base).netloc
    # The issue's own payloads through the real sign-in, on the page as served.
    for payload in ("/\t/evil.example/", "/\n/evil.example/", "/\r/evil.example/"):
        assert _sign_in_through_the_page(chromium, base, payload, as_served=True) == "/", payload
    assert _sign_in_through_the_page(chromium, base, "/branch/2", as_served=False) == "/branch/2"
    # Every payload against the script's own check. The login answer is the
    # real one recorded once, replayed so that 22 payloads cost no 22 argon2
    # checks; the page, its script and the browser's URL handling are real.
    answer = httpx.post(
        f"{base}/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert answer.status_code == 200
    context = chromium.new_context()
    page = context.new_page()
    foreign: list[str] = []

    def route(request_route: Any) -> None:
        url = request_route.request.url
        if urlsplit(url).netloc != home:
            foreign.append(url)
            request_route.abort()
        elif urlsplit(url).path == "/api/auth/login":
            request_route.fulfill(status=200, content_type="application/json", body=answer.content)
        else:
            request_route.continue_()

    page.route("**/*", route)
    for payload in UNSAFE:
        went = urlsplit(_where_the_script_goes(page, base, payload))
        assert (went.netloc, went.path) == (home, "/"), (payload, went)
    assert foreign == [], foreign
    context.close()
