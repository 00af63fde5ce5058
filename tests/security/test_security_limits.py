"""Abuse limits of a running server: streams per user, writes and lock calls
per user, requests per client IP — each refused with 429 and ``Retry-After``,
each refusal changing nothing, and nobody else held back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attack import Caller, assert_error, live_server, sign_in
from factories import World
from live import LiveServer

Live = tuple[LiveServer, World, str]
MAX_STREAMS = 3


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(
        tmp_path_factory.mktemp("limits"),
        migrated_template,
        max_streams_per_user=str(MAX_STREAMS),
        rate_limit_writes="5/minute",
        rate_limit_locks="5/minute",
        # The lock burst renews one lock without a stream: keep that legal for the run.
        disconnect_grace="60",
    ) as started:
        yield started


def _retry_after(response: httpx.Response) -> int:
    value = int(response.headers["retry-after"])
    assert value >= 1
    return value


def test_streams_per_user_are_capped_across_branches(limits: Live) -> None:
    server, world, _url = limits
    alice = sign_in(server.url, "alice@example.com")
    bob = sign_in(server.url, "bob@example.com")
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    paths = [
        f"/api/branches/{downtown}/events?client_id=s1",
        f"/api/branches/{downtown}/events?client_id=s2",
        f"/api/branches/{airport}/events?client_id=s3",
    ]
    readers = []  # a dropped line iterator would close its connection
    with contextlib.ExitStack() as open_streams:
        for path in paths:
            stream = open_streams.enter_context(alice.http.stream("GET", path))
            assert stream.status_code == 200
            readers.append(stream.iter_lines())
            next(readers[-1])  # the server has counted it
        refused = alice.http.get(f"/api/branches/{airport}/events?client_id=s4", timeout=5)
        assert_error(refused, 429, "too_many_streams")
        _retry_after(refused)
        # Another user is not affected by Alice's streams.
        with bob.http.stream("GET", f"/api/branches/{downtown}/events?client_id=b1") as other:
            assert other.status_code == 200
    # Closing her streams frees her slots.
    with alice.http.stream("GET", paths[0]) as again:
        assert again.status_code == 200
    alice.http.close()
    bob.http.close()


def _burst(caller: Caller, method: str, path: str, body: object, n: int) -> list[httpx.Response]:
    return [
        caller.http.request(method, path, json=body, headers=caller.headers()) for _ in range(n)
    ]


def test_writes_per_user_are_limited(limits: Live) -> None:
    server, world, _url = limits
    bob = sign_in(server.url, "bob@example.com")
    dave = sign_in(server.url, "dave@example.com")
    case = world.cases["phone"]
    answers = [
        bob.http.patch(
            f"/api/cases/{case}", json={"changes": {"notes": f"w{n}"}}, headers=bob.headers()
        )
        for n in range(5)
    ]
    assert [a.status_code for a in answers] == [200] * 5
    version = answers[-1].json()["version"]
    refused = bob.http.patch(
        f"/api/cases/{case}", json={"changes": {"notes": "over"}}, headers=bob.headers()
    )
    assert_error(refused, 429, "rate_limited")
    assert 1 <= _retry_after(refused) <= 60
    created = bob.http.post(
        f"/api/branches/{world.branches['downtown']}/cases",
        json={"customer_name": "Over the limit"},
        headers=bob.headers(),
    )
    assert_error(created, 429, "rate_limited")  # POST counts against the same budget
    current = bob.http.get(f"/api/cases/{case}").json()
    assert (current["notes"], current["version"]) == ("w4", version)
    # Dave still writes.
    ok = dave.http.patch(
        f"/api/cases/{case}", json={"changes": {"notes": "dave"}}, headers=dave.headers()
    )
    assert ok.status_code == 200
    bob.http.close()
    dave.http.close()


def test_lock_calls_per_user_are_limited(limits: Live) -> None:
    server, world, _url = limits
    alice = sign_in(server.url, "alice@example.com")
    case = world.cases["laptop"]
    path = f"/api/cases/{case}/locks/serial_number"
    answers = _burst(alice, "PUT", path, None, 5)
    assert [a.status_code for a in answers] == [200] * 5
    refused = alice.http.put(path, headers=alice.headers())
    assert_error(refused, 429, "rate_limited")
    assert 1 <= _retry_after(refused) <= 60
    assert_error(alice.http.delete(path, headers=alice.headers()), 429, "rate_limited")
    # Lock calls have their own budget: writes still pass.
    patched = alice.http.patch(
        f"/api/cases/{case}", json={"changes": {"product": "XPS 15"}}, headers=alice.headers()
    )
    assert patched.status_code == 200
    alice.http.close()


def test_requests_per_ip_are_limited(tmp_path: Path, migrated_template: Path) -> None:
    with live_server(
        tmp_path, migrated_template, rate_limit_ip="20/minute", trusted_proxies="127.0.0.1"
    ) as (server, *_):
        # 127.0.0.1 is made a trusted proxy: X-Forwarded-For names the client.
        flood = {"X-Forwarded-For": "203.0.113.7"}
        with httpx.Client(base_url=server.url, headers=flood) as attacker:
            statuses = [attacker.get("/api/me").status_code for _ in range(20)]
            assert statuses == [401] * 20  # anonymous requests count as well
            for path in ("/api/me", "/login", "/api/auth/login"):
                refused = attacker.request(
                    "POST" if path.endswith("login") and path.startswith("/api") else "GET",
                    path,
                    json={"email": "a@example.com", "password": "x"} if "auth" in path else None,
                )
                assert_error(refused, 429, "rate_limited")
                assert 1 <= _retry_after(refused) <= 60
                assert refused.headers["x-content-type-options"] == "nosniff"
            # Load balancer probes and static files are not counted.
            assert attacker.get("/healthz").status_code == 200
            assert attacker.get("/static/js/main.js").status_code == 200
        # Another client address is not affected.
        with httpx.Client(base_url=server.url, headers={"X-Forwarded-For": "203.0.113.8"}) as other:
            assert other.get("/api/me").status_code == 401
            assert sign_in(server.url, "alice@example.com").http.get("/api/me").status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'warrantysync_rate_limited_total{scope="ip"}' in metrics
