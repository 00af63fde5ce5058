"""web/forwarded.py: the Origin check and cookie behind a proxy, in process.

The peer address is the ASGI client; ``trusted_proxies`` is always set here,
never left to its default. tests/test_nginx.py does the same through a real
nginx and Chromium.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import make_settings
from factories import PASSWORD, World
from warrantysync import create_app
from warrantysync.web.forwarded import forwarded_host

PROXY = ("10.0.0.10", 41000)  # a configuration value and an ASGI client: no traffic
STRANGER = ("203.0.113.7", 41000)
PUBLIC = "https://warranty.example.com:8443"
FORWARDED = {"X-Forwarded-Host": "warranty.example.com:8443", "X-Forwarded-Proto": "https"}


@contextlib.asynccontextmanager
async def app_client(
    db_url: str, peer: tuple[str, int], **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(db_url, trusted_proxies=[PROXY[0]], **overrides)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=peer)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://node:8000") as http:
            yield http


async def sign_in(http: httpx.AsyncClient, headers: dict[str, str]) -> httpx.Response:
    return await http.post(
        "/api/auth/login",
        json={"email": "alice@example.com", "password": PASSWORD},
        headers=headers,
    )


async def save_notes(
    http: httpx.AsyncClient, world: World, login: httpx.Response, headers: dict[str, str]
) -> httpx.Response:
    # Sent by hand: httpx keeps a Secure cookie to itself over http://, as a browser would.
    cookie = login.headers["set-cookie"].split(";", 1)[0]
    return await http.patch(
        f"/api/cases/{world.cases['phone']}",
        json={"changes": {"notes": "through the proxy"}},
        headers={**headers, "X-CSRF-Token": login.json()["csrf_token"], "Cookie": cookie},
    )


async def test_a_trusted_proxy_forwards_host_port_and_scheme(db_url: str, world: World) -> None:
    async with app_client(db_url, PROXY) as http:
        login = await sign_in(http, {**FORWARDED, "Origin": PUBLIC})
        assert login.status_code == 200, login.text
        assert "secure" in login.headers["set-cookie"].lower()
        saved = await save_notes(http, world, login, {**FORWARDED, "Origin": PUBLIC})
        assert saved.status_code == 200, saved.text
        # nginx's `Host $host` alone: the port is lost, and so is the match.
        portless = await save_notes(
            http, world, login, {"X-Forwarded-Proto": "https", "Origin": PUBLIC}
        )
        assert portless.status_code == 403
        body = portless.json()
        assert body["error"] == "csrf_failed"
        # The refusal names both origins, so an operator sees what the proxy lost.
        assert PUBLIC in body["message"] and "'https://node:8000'" in body["message"]


async def test_forwarded_headers_of_an_untrusted_peer_change_nothing(
    db_url: str, world: World
) -> None:
    async with app_client(db_url, STRANGER) as http:
        refused = await sign_in(http, {**FORWARDED, "Origin": PUBLIC})
        assert refused.status_code == 403
        assert refused.json()["error"] == "csrf_failed"
        assert "'http://node:8000'" in refused.json()["message"]
        # Its own Host still counts, and the cookie is not Secure over plain http.
        direct = await sign_in(http, {**FORWARDED, "Origin": "http://node:8000"})
        assert direct.status_code == 200
        assert "secure" not in direct.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    "value", ["evil.example/path", "a b.example", "user@evil.example", "", "x" * 300]
)
async def test_a_malformed_forwarded_host_is_ignored(db_url: str, world: World, value: str) -> None:
    async with app_client(db_url, PROXY) as http:
        answer = await sign_in(http, {"X-Forwarded-Host": value, "Origin": "http://node:8000"})
        assert answer.status_code == 200, answer.text


def test_the_last_forwarded_host_is_the_one_the_nearest_proxy_set() -> None:
    headers = [
        (b"x-forwarded-host", b"spoofed.example, outer.example"),
        (b"x-forwarded-host", b"warranty.example.com:8443"),
    ]
    assert forwarded_host(headers) == b"warranty.example.com:8443"
    assert forwarded_host([(b"x-forwarded-host", b"[2001:db8::1]:8443")]) == b"[2001:db8::1]:8443"
    assert forwarded_host([(b"host", b"node:8000")]) is None
    assert forwarded_host([(b"x-forwarded-host", b"a.example, bad/one")]) is None


async def test_the_public_url_is_the_one_own_origin(db_url: str, world: World) -> None:
    # A proxy that sends no X-Forwarded-* at all, and a peer that is not trusted.
    async with app_client(db_url, STRANGER, public_url=PUBLIC) as http:
        login = await sign_in(http, {"Origin": PUBLIC})
        assert login.status_code == 200, login.text
        assert "secure" in login.headers["set-cookie"].lower()
        assert (await save_notes(http, world, login, {"Origin": PUBLIC})).status_code == 200
        # The request's own Host no longer counts.
        direct = await save_notes(http, world, login, {"Origin": "http://node:8000"})
        assert direct.status_code == 403
    # Nor can a trusted proxy's headers move it elsewhere.
    async with app_client(db_url, PROXY, public_url=PUBLIC + "/") as http:
        moved = {"X-Forwarded-Host": "other.example", "X-Forwarded-Proto": "http"}
        assert (await sign_in(http, {**moved, "Origin": PUBLIC})).status_code == 200
        refused = await sign_in(http, {**moved, "Origin": "http://other.example"})
        assert refused.status_code == 403
