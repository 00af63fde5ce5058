"""Server-rendered pages, security headers, health and metrics."""

from __future__ import annotations

import gc
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import login
from factories import World, add_member, make_branch, make_user
from warrantysync.container import Services
from warrantysync.storage.models import Role

EVIL = "</script><script>alert(1)</script>"


class Element:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.text = ""


class Page(HTMLParser):
    """Every element with its attributes, and the text of scripts."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[Element] = []
        self._open_script: Element | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = Element(tag, dict(attrs))
        self.elements.append(element)
        if tag == "script":
            self._open_script = element

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._open_script = None

    def handle_data(self, data: str) -> None:
        if self._open_script is not None:
            self._open_script.text += data

    def find(self, tag: str, **attrs: str) -> list[Element]:
        return [
            e
            for e in self.elements
            if e.tag == tag and all(e.attrs.get(k) == v for k, v in attrs.items())
        ]

    def one(self, tag: str, **attrs: str) -> Element:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, [e.attrs for e in found])
        return found[0]


Browse = Callable[[str], Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def as_user(app_services: tuple[Any, Services], world: World) -> AsyncIterator[Browse]:
    opened: list[httpx.AsyncClient] = []

    async def make(name: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app_services[0])
        http = httpx.AsyncClient(transport=transport, base_url="http://testserver")
        opened.append(http)
        await login(http, f"{name}@example.com")
        return http

    yield make
    for http in opened:
        await http.aclose()


def config_of(page: Page) -> dict[str, Any]:
    script = page.one("script", id="ws-config")
    assert script.attrs.get("type") == "application/json"
    config: dict[str, Any] = json.loads(script.text)
    return config


def assert_csp_safe(page: Page) -> None:
    """Nothing the Content-Security-Policy (script-src/style-src 'self') would block."""
    for element in page.elements:
        if element.tag == "script":
            inline_code = "src" not in element.attrs and element.attrs.get("type") not in (
                "application/json",
            )
            assert not inline_code, element.text[:80]
        assert element.tag != "style", "inline <style> is blocked by style-src 'self'"
        for name in element.attrs:
            assert not name.startswith("on"), f"inline handler {name} on <{element.tag}>"
            assert name != "style", f"inline style attribute on <{element.tag}>"


# -- login ---------------------------------------------------------------------------


async def test_login_page_renders_the_form(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/login")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    assert page.find("input", name="email")
    password = page.one("input", name="password")
    assert password.attrs.get("type") == "password"
    assert page.find("button", type="submit")
    assert page.find("form")
    assert_csp_safe(page)


async def test_login_page_next_is_kept_only_when_local(
    client: httpx.AsyncClient, world: World
) -> None:
    for sent, kept in (
        ("/branch/1", "/branch/1"),
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
    ):
        page = Page((await client.get("/login", params={"next": sent})).text)
        assert page.one("form").attrs.get("data-next") == kept, sent


async def test_login_page_when_logged_in_redirects(client: httpx.AsyncClient, world: World) -> None:
    await login(client, "alice@example.com")
    response = await client.get("/login")
    assert response.status_code in (302, 303)
    assert response.headers["location"] == "/"
    response = await client.get("/login", params={"next": "//evil.example"})
    assert response.headers["location"] == "/"


# -- index ---------------------------------------------------------------------------


async def test_index_redirects_anonymous_to_login(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/")
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"].startswith("/login")


async def test_index_lists_the_users_branches(as_user: Browse, world: World) -> None:
    alice = await as_user("alice")
    response = await alice.get("/")
    assert response.status_code == 200
    page = Page(response.text)
    links = {e.attrs.get("href") for e in page.find("a")}
    assert f"/branch/{world.branches['downtown']}" in links
    assert f"/branch/{world.branches['airport']}" in links
    assert "Downtown" in response.text and "Airport" in response.text
    assert "Alice Johnson" in response.text
    assert_csp_safe(page)
    bob = await as_user("bob")
    response = await bob.get("/")
    links = {e.attrs.get("href") for e in Page(response.text).find("a")}
    assert f"/branch/{world.branches['downtown']}" in links
    assert f"/branch/{world.branches['airport']}" not in links
    assert "Airport" not in response.text


async def test_index_escapes_names(as_user: Browse, services: Services, world: World) -> None:
    branch = await make_branch(services.db, name=EVIL)
    await add_member(services.db, user_id=world.users["alice"], branch_id=branch, role=Role.viewer)
    alice = await as_user("alice")
    response = await alice.get("/")
    assert EVIL not in response.text
    assert "<script>alert(1)" not in response.text


async def test_logout_form(as_user: Browse, world: World) -> None:
    alice = await as_user("alice")
    page = Page((await alice.get("/")).text)
    csrf = page.one("input", name="csrf_token").attrs["value"]
    assert csrf
    # Without the form's token nothing happens.
    response = await alice.post("/logout", data={"csrf_token": "wrong"})
    assert response.status_code == 303
    assert (await alice.get("/api/me")).status_code == 200
    response = await alice.post("/logout", data={"csrf_token": csrf})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    assert (await alice.get("/api/me")).status_code == 401


# -- branch page ------------------------------------------------------------------------


async def test_branch_page_has_app_and_config(
    as_user: Browse, services: Services, world: World
) -> None:
    alice = await as_user("alice")
    downtown = world.branches["downtown"]
    response = await alice.get(f"/branch/{downtown}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert '<div id="app"' in response.text
    page = Page(response.text)
    page.one("div", id="app")
    config = config_of(page)
    assert {"DEBOUNCE_MS", "SYNC_INTERVAL_MS", "RECONNECT_DELAYS_MS", "LOCK_RENEW_MS"} <= set(
        config
    )
    settings = services.settings
    assert config["DEBOUNCE_MS"] == settings.debounce_ms == 1000
    assert config["SYNC_INTERVAL_MS"] == settings.sync_interval_ms == 60000
    assert config["RECONNECT_DELAYS_MS"] == [1000, 2000, 4000, 8000, 16000, 30000]
    assert config["LOCK_RENEW_MS"] == int(settings.lock_ttl * 1000 / 3)
    assert config["branch_id"] == downtown
    # The field table static/js/fields.js answers from: the one the node tests use.
    assert config["fields"] == json.loads(
        (Path(__file__).parent / "js" / "fields.json").read_text()
    )
    me = (await alice.get("/api/me")).json()
    assert config["csrf_token"] == me["csrf_token"]
    assert config["role"] == "editor"
    assert_csp_safe(page)
    # Every script the page loads is served.
    for script in page.find("script"):
        if "src" in script.attrs:
            src = script.attrs["src"]
            assert src is not None
            served = await alice.get(src)
            assert served.status_code == 200, src
            assert "javascript" in served.headers["content-type"]


async def test_branch_page_config_follows_settings(db_url: str, world: World) -> None:
    from conftest import make_settings
    from warrantysync import create_app

    app = create_app(
        make_settings(
            db_url, debounce_ms=250, sync_interval_ms=5000, reconnect_delays_ms="10,20", lock_ttl=6
        )
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            await login(http, "alice@example.com")
            response = await http.get(f"/branch/{world.branches['downtown']}")
            config = config_of(Page(response.text))
    assert config["DEBOUNCE_MS"] == 250
    assert config["SYNC_INTERVAL_MS"] == 5000
    assert config["RECONNECT_DELAYS_MS"] == [10, 20]
    assert config["LOCK_RENEW_MS"] == 2000


async def test_branch_page_config_escapes_script_breakouts(
    as_user: Browse, services: Services, world: World
) -> None:
    downtown = world.branches["downtown"]
    mallory = await make_user(services.db, email="mallory@example.com", name=EVIL)
    await add_member(services.db, user_id=mallory, branch_id=downtown, role=Role.viewer)
    amp = await make_user(services.db, email="amp@example.com", name="A & B <!-- x")
    await add_member(services.db, user_id=amp, branch_id=downtown, role=Role.viewer)
    alice = await as_user("alice")
    response = await alice.get(f"/branch/{downtown}")
    assert response.status_code == 200
    assert EVIL not in response.text
    assert "</script><script>" not in response.text
    assert "<!--" not in response.text.split('id="ws-config"', 1)[1].split("</script>", 1)[0]
    page = Page(response.text)
    config = config_of(page)  # still valid JSON, with the names intact
    members = {m["name"] for m in config["members"]}
    assert EVIL in members and "A & B <!-- x" in members
    # Only the two scripts of the template: nothing injected.
    assert len(page.find("script")) == 2
    # The page of a member with that name renders it escaped too.
    mallory_http = await as_user("mallory")
    response = await mallory_http.get(f"/branch/{downtown}")
    assert EVIL not in response.text
    assert config_of(Page(response.text))["user"]["name"] == EVIL


async def test_branch_page_escapes_the_branch_name(
    as_user: Browse, services: Services, world: World
) -> None:
    branch = await make_branch(services.db, name=EVIL)
    await add_member(services.db, user_id=world.users["alice"], branch_id=branch, role=Role.editor)
    alice = await as_user("alice")
    response = await alice.get(f"/branch/{branch}")
    assert response.status_code == 200
    assert EVIL not in response.text
    assert config_of(Page(response.text))["branch_name"] == EVIL


async def test_branch_page_404_for_non_members(as_user: Browse, world: World) -> None:
    bob = await as_user("bob")
    for branch in (world.branches["airport"], 999999):
        response = await bob.get(f"/branch/{branch}")
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "ws-config" not in response.text
        assert "Airport" not in response.text


async def test_a_case_has_its_own_page(as_user: Browse, world: World) -> None:
    alice = await as_user("alice")
    downtown, phone = world.branches["downtown"], world.cases["phone"]
    response = await alice.get(f"/branch/{downtown}/cases/{phone}")
    assert response.status_code == 200
    page = Page(response.text)
    assert_csp_safe(page)
    config = config_of(page)
    assert (config["branch_id"], config["open_case"]) == (downtown, phone)
    assert config_of(Page((await alice.get(f"/branch/{downtown}")).text))["open_case"] is None


async def test_a_case_page_is_404_unless_the_case_is_of_that_branch(
    as_user: Browse, services: Services, world: World
) -> None:
    alice, bob = await as_user("alice"), await as_user("bob")
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    phone, kettle = world.cases["phone"], world.cases["airport"]
    for who, url in [
        (alice, f"/branch/{downtown}/cases/{kettle}"),  # a case of another branch of hers
        (alice, f"/branch/{downtown}/cases/999999"),
        (bob, f"/branch/{airport}/cases/{kettle}"),  # not his branch at all
        (bob, f"/branch/{downtown}/cases/{kettle}"),
    ]:
        response = await who.get(url)
        assert response.status_code == 404, url
        assert "ws-config" not in response.text
        assert "Kettle" not in response.text and "Ola Berg" not in response.text
    dave = await as_user("dave")
    deleted = await dave.delete(f"/api/cases/{phone}", headers=await _csrf(dave))
    assert deleted.status_code == 204
    assert (await alice.get(f"/branch/{downtown}/cases/{phone}")).status_code == 404


async def _csrf(http: httpx.AsyncClient) -> dict[str, str]:
    return {"X-CSRF-Token": (await http.get("/api/me")).json()["csrf_token"]}


async def test_a_case_page_signs_in_first_and_comes_back(
    client: httpx.AsyncClient, world: World
) -> None:
    path = f"/branch/{world.branches['downtown']}/cases/{world.cases['phone']}"
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={path}"


async def test_branch_page_anonymous_goes_to_login(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get(f"/branch/{world.branches['downtown']}")
    assert response.status_code in (302, 303, 307)
    assert response.headers["location"] == f"/login?next=/branch/{world.branches['downtown']}"


# -- security headers --------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0].lower()] = words[1:]
    return directives


async def test_security_headers_everywhere(as_user: Browse, world: World) -> None:
    alice = await as_user("alice")
    responses = [
        await alice.get("/login"),
        await alice.get("/"),
        await alice.get(f"/branch/{world.branches['downtown']}"),
        await alice.get(f"/branch/{world.branches['airport'] + 100}"),
        await alice.get("/api/me"),
        await alice.get("/api/cases/999999"),
        await alice.get("/healthz"),
        await alice.get("/static/js/main.js"),
    ]
    for response in responses:
        headers = response.headers
        csp = csp_directives(headers["content-security-policy"])
        script_src = csp.get("script-src", csp.get("default-src"))
        assert script_src is not None, response.url
        assert "'unsafe-inline'" not in script_src
        assert "'unsafe-eval'" not in script_src
        assert "*" not in script_src
        assert "frame-ancestors" in csp
        assert csp["frame-ancestors"] in (["'none'"], ["'self'"])
        assert csp.get("object-src") == ["'none'"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] in (
            "same-origin",
            "no-referrer",
            "strict-origin",
            "strict-origin-when-cross-origin",
        )


# -- health and metrics -------------------------------------------------------------------


async def test_healthz_and_readyz(client: httpx.AsyncClient, world: World) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == "ok"


async def test_metrics(as_user: Browse, world: World) -> None:
    alice = await as_user("alice")
    # Something to count: a save and a lock.
    csrf = {"X-CSRF-Token": (await alice.get("/api/me")).json()["csrf_token"]}
    case_url = f"/api/cases/{world.cases['phone']}"
    assert (await alice.patch(case_url, json={"changes": {"notes": "m"}}, headers=csrf)).is_success
    response = await alice.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "warrantysync_" in text
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert any(line.startswith("warrantysync_") for line in samples)
    assert "warrantysync_save_latency_seconds_count 1.0" in text
    gc.collect()  # a full collection, timed
    text = (await alice.get("/metrics")).text
    full = re.search(r'^warrantysync_gc_pause_seconds_count\{generation="2"\} (\S+)$', text, re.M)
    assert full is not None and float(full[1]) >= 1
