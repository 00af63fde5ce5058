"""The HTTP edge of a running server: CSRF, Origin, media type, size, CORS,
cookie flags behind a proxy, security headers, and no secrets in URLs or logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest

from attack import EVIL, SESSION_COOKIE, Caller, assert_error, live_server, run_admin, sign_in
from conftest import LIVE_ENV
from factories import PASSWORD, World
from live import LiveServer

Live = tuple[LiveServer, World, str]


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    # Told to trust 127.0.0.1, as a node behind a local nginx would be; no
    # proxy is trusted by default (test_forwarded_headers_of_an_untrusted_peer_are_ignored).
    with live_server(
        tmp_path_factory.mktemp("edge"), migrated_template, trusted_proxies="127.0.0.1"
    ) as started:
        yield started


@pytest.fixture(scope="module")
def alice(edge: Live) -> Iterator[Caller]:
    caller = sign_in(edge[0].url, "alice@example.com")
    yield caller
    caller.http.close()


def _writes(world: World) -> list[tuple[str, str, dict[str, object] | None]]:
    downtown, case = world.branches["downtown"], world.cases["laptop"]
    return [
        ("PATCH", f"/api/cases/{case}", {"changes": {"notes": "forged"}}),
        ("POST", f"/api/branches/{downtown}/cases", {"customer_name": "Forged"}),
        ("DELETE", f"/api/cases/{case}", None),
        ("PUT", f"/api/cases/{case}/locks/notes", None),
        ("DELETE", f"/api/cases/{case}/locks/notes", None),
        ("POST", "/api/auth/password", {"current_password": PASSWORD, "new_password": "x" * 9}),
        ("POST", "/api/auth/logout", None),
    ]


FORGERIES = ["no token", "wrong token", "other session's token", "foreign origin", "null origin"]


@pytest.mark.parametrize("forgery", FORGERIES)
def test_forged_cookie_writes_are_403_and_change_nothing(
    edge: Live, alice: Caller, forgery: str
) -> None:
    server, world, _url = edge
    other = sign_in(server.url, "bob@example.com")
    case = world.cases["laptop"]
    before = alice.http.get(f"/api/cases/{case}").json()
    for method, path, body in _writes(world):
        headers = {"X-Client-Id": "forger"}
        if forgery == "wrong token":
            headers["X-CSRF-Token"] = alice.csrf[:-2] + "xx"
        elif forgery == "other session's token":
            headers["X-CSRF-Token"] = other.csrf
        elif forgery == "foreign origin":
            headers |= {"X-CSRF-Token": alice.csrf, "Origin": EVIL}
        elif forgery == "null origin":
            headers |= {"X-CSRF-Token": alice.csrf, "Origin": "null"}
        response = alice.http.request(method, path, json=body, headers=headers)
        assert_error(response, 403, "csrf_failed")
    assert alice.http.get(f"/api/cases/{case}").json() == before
    assert alice.http.get("/api/me").status_code == 200  # logout did not happen either
    other.http.close()


def test_a_foreign_origin_cannot_log_in(edge: Live) -> None:
    with httpx.Client(base_url=edge[0].url) as http:
        response = http.post(
            "/api/auth/login",
            json={"email": "alice@example.com", "password": PASSWORD},
            headers={"Origin": EVIL},
        )
        assert_error(response, 403, "csrf_failed")
        assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",  # what a cross-site <form enctype=text/plain> sends
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        None,
    ],
)
def test_non_json_bodies_are_415(edge: Live, alice: Caller, content_type: str | None) -> None:
    _server, world, _url = edge
    case, downtown = world.cases["laptop"], world.branches["downtown"]
    headers = alice.headers()
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = b'{"changes": {"notes": "as text"}}'
    for method, path in (
        ("PATCH", f"/api/cases/{case}"),
        ("POST", f"/api/branches/{downtown}/cases"),
    ):
        response = alice.http.request(method, path, content=body, headers=headers)
        assert_error(response, 415, "unsupported_media_type")
    assert alice.http.get(f"/api/cases/{case}").json()["notes"] != "as text"


def test_bodies_over_64_kib_are_413(edge: Live, alice: Caller) -> None:
    _server, world, _url = edge
    case = world.cases["laptop"]
    big = b'{"changes": {"notes": "' + b"x" * (64 * 1024) + b'"}}'
    headers = alice.headers(**{"Content-Type": "application/json"})
    assert_error(
        alice.http.patch(f"/api/cases/{case}", content=big, headers=headers),
        413,
        "payload_too_large",
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    chunked = alice.http.patch(f"/api/cases/{case}", content=chunks(), headers=headers)
    assert_error(chunked, 413, "payload_too_large")
    # Exactly at the limit is read (and then judged on its content).
    exact = b'{"changes":{"notes":"' + b"y" * (64 * 1024 - 24) + b'"}}'
    assert len(exact) <= 64 * 1024
    assert alice.http.patch(f"/api/cases/{case}", content=exact, headers=headers).status_code == 422


def test_no_cors_headers_for_foreign_origins(edge: Live, alice: Caller) -> None:
    _server, world, _url = edge
    case = world.cases["laptop"]
    answers = [
        alice.http.get("/api/me", headers={"Origin": EVIL}),
        alice.http.get(f"/api/cases/{case}", headers={"Origin": EVIL}),
        alice.http.options(
            f"/api/cases/{case}",
            headers={
                "Origin": EVIL,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "content-type,x-csrf-token",
            },
        ),
        alice.http.options(
            "/api/auth/login",
            headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"},
        ),
    ]
    for response in answers:
        leaked = {k: v for k, v in response.headers.items() if k.startswith("access-control-")}
        assert leaked == {}, (response.request.method, response.request.url, leaked)
    # The preflight is not an invitation either.
    assert answers[2].status_code >= 400


def _cookie(response: httpx.Response) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    jar.load(response.headers["set-cookie"])
    return jar


def _login_raw(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    with httpx.Client(base_url=base) as http:
        return http.post(
            "/api/auth/login",
            json={"email": "bob@example.com", "password": PASSWORD},
            headers=headers or {},
        )


def test_session_cookie_is_httponly_lax_and_secure_behind_a_trusted_proxy(edge: Live) -> None:
    plain = _login_raw(edge[0].url)
    morsel = _cookie(plain)[SESSION_COOKIE]
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"
    assert morsel["path"] == "/"
    assert not morsel["secure"]  # plain http: a Secure cookie would never come back
    # 127.0.0.1 is this server's trusted proxy, so its X-Forwarded-Proto counts.
    proxied = _login_raw(edge[0].url, {"X-Forwarded-Proto": "https"})
    morsel = _cookie(proxied)[SESSION_COOKIE]
    assert morsel["secure"] is True
    assert morsel["httponly"] is True
    assert morsel["samesite"].lower() == "lax"


@pytest.mark.parametrize("trusted", ["192.0.2.1", None], ids=["another-peer", "default"])
def test_forwarded_headers_of_an_untrusted_peer_are_ignored(
    tmp_path: Path, migrated_template: Path, trusted: str | None
) -> None:
    # 192.0.2.1 (TEST-NET-1) is only a configuration value: no traffic goes there.
    # By default no proxy at all is trusted, 127.0.0.1 included.
    env = {} if trusted is None else {"trusted_proxies": trusted}
    with live_server(tmp_path, migrated_template, **env) as (server, *_):
        response = _login_raw(server.url, {"X-Forwarded-Proto": "https"})
        assert response.status_code == 200
        assert not _cookie(response)[SESSION_COOKIE]["secure"]
        # Nor does the untrusted peer get to claim https for the Origin check.
        caller = sign_in(server.url, "alice@example.com")
        spoofed = caller.http.post(
            "/api/auth/logout",
            headers={
                **caller.headers(),
                "Origin": f"https://127.0.0.1:{server.port}",
                "X-Forwarded-Proto": "https",
            },
        )
        assert_error(spoofed, 403, "csrf_failed")
        caller.http.close()


CSP_RULES = ("frame-ancestors 'none'", "object-src 'none'", "base-uri 'self'")


def _check_security_headers(response: httpx.Response) -> None:
    headers = response.headers
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    csp = headers.get("content-security-policy", "")
    directives = {d.strip().split(" ")[0]: d.strip() for d in csp.split(";") if d.strip()}
    script = directives.get("script-src", directives.get("default-src", ""))
    assert script, where
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script, where
    for rule in CSP_RULES:
        assert rule in csp, (where, rule)
    assert headers.get("x-content-type-options") == "nosniff", where
    assert headers.get("referrer-policy") in ("same-origin", "no-referrer", "strict-origin"), where
    assert headers.get("x-frame-options") == "DENY", where


def test_security_headers_on_pages_api_errors_and_the_stream(edge: Live, alice: Caller) -> None:
    server, world, _url = edge
    downtown, case = world.branches["downtown"], world.cases["laptop"]
    with httpx.Client(base_url=server.url) as anonymous:
        responses = [
            anonymous.get("/login"),
            anonymous.get("/"),  # a redirect
            anonymous.get("/api/me"),  # 401
            anonymous.get("/static/js/main.js"),
            anonymous.get("/healthz"),
        ]
    responses += [
        alice.http.get("/"),
        alice.http.get(f"/branch/{downtown}"),
        alice.http.get(f"/branch/{world.branches['airport'] + 100}"),  # 404 page
        alice.http.get(f"/api/branches/{downtown}/cases"),
        alice.http.get(f"/api/cases/{case}"),
        alice.http.patch(f"/api/cases/{case}", json={"changes": {}}, headers=alice.headers()),
    ]
    for response in responses:
        _check_security_headers(response)
    with alice.http.stream("GET", f"/api/branches/{downtown}/events?client_id=hdr") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        _check_security_headers(stream)
    # The page loads no inline script at all, so the CSP costs it nothing.
    page = alice.http.get(f"/branch/{downtown}").text
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert "src=" in tag or 'type="application/json"' in tag, tag


def test_no_secrets_in_urls_or_logs(tmp_path: Path, migrated_template: Path) -> None:
    with live_server(tmp_path, migrated_template, log_format="text") as (server, world, url):
        api_token = run_admin(
            url,
            "create_token",
            email="dave@example.com",
            name="script",
            secret_key=LIVE_ENV["WARRANTYSYNC_SECRET_KEY"],
        )
        caller = sign_in(server.url, "alice@example.com")
        downtown, case = world.branches["downtown"], world.cases["phone"]
        seen_urls: list[str] = []
        caller.http.event_hooks["request"] = [lambda request: seen_urls.append(str(request.url))]
        caller.http.get("/")
        page = caller.http.get(f"/branch/{downtown}")
        assert caller.http.patch(
            f"/api/cases/{case}", json={"changes": {"notes": "n"}}, headers=caller.headers()
        ).is_success
        with caller.http.stream(
            "GET", f"/api/branches/{downtown}/events?client_id=logcheck&last_event_id=0"
        ) as stream:
            for line in stream.iter_lines():
                if line.startswith("event: ready"):
                    break
        with httpx.Client(base_url=server.url) as script:
            script.get("/api/me", headers={"Authorization": f"Bearer {api_token}"})
        bad = httpx.post(
            f"{server.url}/api/auth/login",
            json={"email": "alice@example.com", "password": "Wr0ng-" + PASSWORD},
        )
        assert bad.status_code == 401
        assert caller.http.post("/api/auth/logout", headers=caller.headers()).status_code == 204
        caller.http.close()
        server.stop()
        log = server.log()
    assert "GET /api/branches" in log or "/api/" in log  # the access log is on
    secrets = {
        "session token": caller.token,
        "csrf token": caller.csrf,
        "password": PASSWORD,
        "api token": api_token,
    }
    for name, value in secrets.items():
        assert value not in log, f"{name} appears in the server log"
        for seen in seen_urls:
            assert value not in seen, f"{name} appears in a URL"
    # Links and forms of the page carry no token either.
    for link in re.findall(r'(?:href|src|action)="([^"]*)"', page.text):
        assert caller.csrf not in link and caller.token not in link
