"""Request bodies against a running server: refused early, never held in memory.

The attack: a 100 MiB body to ``POST /api/auth/login`` was read whole before
the 401 (+265 MiB RSS per request); the HTML ``POST /logout`` form did the
same before slicing. Now every route reads its body through one reader
(``web/deps.py``, ``read_body``) that stops at 64 KiB: 413 as soon as the cap
is passed, and a route that takes no body never reads one. The attacking
client sends the way a browser uploads — and stops when the answer comes —
so "answered early" is measured in bytes it managed to send.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from attack import Caller, live_server, sign_in
from factories import World
from live import LiveServer
from rawhttp import MIB, Outcome, connect, head, push, rss_kib
from warrantysync.app import create_app
from warrantysync.config import Settings

Live = tuple[LiveServer, World, str]
HUGE = 100 * MIB
CHUNK = b"x" * 65536
# The server may read what the kernel buffers on both sides before it answers.
EARLY = 16 * MIB


@pytest.fixture(scope="module")
def body(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("body"), migrated_template) as started:
        yield started


@pytest.fixture(scope="module")
def alice(body: Live) -> Iterator[Caller]:
    caller = sign_in(body[0].url, "alice@example.com")
    yield caller
    caller.http.close()


def _huge(
    server: LiveServer, method: str, path: str, *headers: str, chunked: bool = False
) -> Outcome:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {HUGE}"
    first = head(method, path, server.port, framing, *headers)
    piece = b"10000\r\n" + CHUNK + b"\r\n" if chunked else CHUNK
    with connect(server.port) as sock:
        return push(sock, first + piece, then=piece, total=HUGE - len(piece))


def _cookie(caller: Caller) -> list[str]:
    return [f"Cookie: warrantysync_session={caller.token}", f"X-CSRF-Token: {caller.csrf}"]


def _assert_refused_early(outcome: Outcome, status: int, code: str | None) -> None:
    assert outcome.status == status, (outcome.response[:300], outcome.sent)
    assert outcome.sent < EARLY, f"the server let {outcome.sent} bytes in before answering"
    if code is not None:
        error = json.loads(outcome.body)
        assert error["error"] == code and error["message"], error


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_login_is_413_before_the_body_is_sent(body: Live, chunked: bool) -> None:
    server = body[0]
    outcome = _huge(
        server, "POST", "/api/auth/login", "Content-Type: application/json", chunked=chunked
    )
    _assert_refused_early(outcome, 413, "payload_too_large")


def test_every_route_with_a_body_refuses_it_early(body: Live, alice: Caller) -> None:
    server, world, _url = body
    case, downtown = world.cases["laptop"], world.branches["downtown"]
    json_type = "Content-Type: application/json"
    before = alice.http.get(f"/api/cases/{case}").json()
    for method, path, extra in [
        ("PATCH", f"/api/cases/{case}", [json_type, *_cookie(alice)]),
        ("POST", f"/api/branches/{downtown}/cases", [json_type, *_cookie(alice)]),
        ("POST", "/logout", ["Content-Type: application/x-www-form-urlencoded", *_cookie(alice)]),
    ]:
        for chunked in (False, True):
            _assert_refused_early(
                _huge(server, method, path, *extra, chunked=chunked), 413, "payload_too_large"
            )
    # Refusals before the body is read come first, and the body stays unread.
    _assert_refused_early(_huge(server, "PATCH", f"/api/cases/{case}", json_type), 401, None)
    assert alice.http.get(f"/api/cases/{case}").json() == before
    assert alice.http.get("/api/me").status_code == 200  # the form logout did not happen


def test_an_import_is_read_only_for_a_manager_and_only_up_to_its_cap(
    body: Live, alice: Caller
) -> None:
    """The CSV import takes more than 64 KiB (WARRANTYSYNC_MAX_IMPORT_BYTES, 32 MiB)."""
    server, world, _url = body
    path = f"/api/branches/{world.branches['downtown']}/cases/import"
    dave = sign_in(server.url, "dave@example.com")
    declared = _huge(server, "POST", path, "Content-Type: text/csv", *_cookie(dave))
    _assert_refused_early(declared, 413, "payload_too_large")
    # Chunked: counted while read, refused as soon as the cap is passed.
    chunked = _huge(server, "POST", path, "Content-Type: text/csv", *_cookie(dave), chunked=True)
    assert chunked.status == 413, chunked.response[:300]
    assert 32 * MIB < chunked.sent < 32 * MIB + EARLY, chunked.sent
    # An editor's file is never read: a declared oversize is 413 at once (as
    # on every write, 413 comes before the role), a chunked one 403.
    outcome = _huge(server, "POST", path, "Content-Type: text/csv", *_cookie(alice))
    _assert_refused_early(outcome, 413, "payload_too_large")
    outcome = _huge(server, "POST", path, "Content-Type: text/csv", *_cookie(alice), chunked=True)
    _assert_refused_early(outcome, 403, "forbidden")
    dave.http.close()


def test_a_route_without_a_body_answers_without_reading_one(body: Live) -> None:
    server = body[0]
    bob = sign_in(server.url, "bob@example.com")
    outcome = _huge(server, "POST", "/api/auth/logout", *_cookie(bob))
    _assert_refused_early(outcome, 204, None)
    assert bob.http.get("/api/me").status_code == 401  # logged out all the same
    bob.http.close()


def test_parallel_huge_bodies_leave_the_server_rss_flat(body: Live) -> None:
    server = body[0]
    assert server.process is not None
    before = rss_kib(server.process.pid)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(
            pool.map(
                lambda _n: _huge(
                    server, "POST", "/api/auth/login", "Content-Type: application/json"
                ),
                range(4),
            )
        )
    after = rss_kib(server.process.pid)
    for outcome in outcomes:
        _assert_refused_early(outcome, 413, "payload_too_large")
    # Four bodies of 100 MiB each; the server may keep a few chunk buffers.
    assert after - before < 32 * 1024, (before, after)


def test_within_the_cap_login_still_works(body: Live) -> None:
    server = body[0]
    padded = json.dumps({"email": "alice@example.com", "password": "pw-secret"})
    padded = padded[:-1] + " " * (64 * 1024 - len(padded)) + "}"
    assert len(padded) == 64 * 1024
    with connect(server.port) as sock:
        outcome = push(
            sock,
            head(
                "POST",
                "/api/auth/login",
                server.port,
                "Content-Type: application/json",
                f"Content-Length: {len(padded)}",
            )
            + padded.encode(),
        )
    assert outcome.status == 200, outcome.response[:300]
    assert "csrf_token" in json.loads(outcome.body)


def _api_routes(routes: Iterable[BaseRoute]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        yield from _api_routes(getattr(included, "routes", None) or [])


def test_no_route_lets_fastapi_parse_a_body() -> None:
    """FastAPI reads a declared body whole before any check: every route takes
    its body through ``read_body`` instead, so none may declare one."""
    app = create_app(Settings(secret_key="k", database_url="sqlite+aiosqlite:///:memory:"))
    routes = list(_api_routes(app.routes))
    assert {"/api/auth/login", "/logout", "/api/cases/{case_id}"} <= {r.path for r in routes}
    declared = [r.path for r in routes if r.body_field is not None]
    assert declared == [], declared
