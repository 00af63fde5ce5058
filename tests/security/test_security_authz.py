"""Who may do what, against a running server.

* The authorization matrix: every endpoint by {anonymous, viewer, editor,
  manager, member of another branch, deactivated user, revoked session}
  answers the status docs/protocol.md documents (one table, one test function).
* No branch leaks into another: not in snapshots, not in replays (whatever
  resume id is sent), not in live events, locks or presence.
* An open stream is closed within one heartbeat of the session being revoked,
  the user deactivated or the membership removed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from attack import SESSION_COOKIE, Caller, live_server, run_admin, run_admin_async, sign_in
from factories import PASSWORD, World
from live import EventReader, LiveServer, Received, reading

Live = tuple[LiveServer, World, str]
HEARTBEAT = 1.0  # LIVE_ENV's WARRANTYSYNC_HEARTBEAT_INTERVAL

ROLES = ("anonymous", "viewer", "editor", "manager", "other_branch", "deactivated", "revoked")
ACCOUNTS = {
    "viewer": "carol@example.com",
    "editor": "bob@example.com",
    "manager": "dave@example.com",
    "other_branch": "erin@example.com",
}

# endpoint: (method, path template, JSON body, expected status per role in ROLES order)
# {b} downtown, {c} a downtown case, {f} a fresh downtown case made for this request.
MATRIX: dict[str, tuple[str, str, Any, tuple[int, ...]]] = {
    "me": ("GET", "/api/me", None, (401, 200, 200, 200, 200, 401, 401)),
    "logout": ("POST", "/api/auth/logout", None, (401, 204, 204, 204, 204, 401, 401)),
    # A wrong current password: every signed-in caller may try (and is refused), no one else.
    "password": (
        "POST",
        "/api/auth/password",
        {"current_password": "not-the-one", "new_password": "long enough"},
        (401, 422, 422, 422, 422, 401, 401),
    ),
    "snapshot": ("GET", "/api/branches/{b}/cases", None, (401, 200, 200, 200, 404, 401, 401)),
    "create": (
        "POST",
        "/api/branches/{b}/cases",
        {"customer_name": "Matrix"},
        (401, 403, 201, 201, 404, 401, 401),
    ),
    "read": ("GET", "/api/cases/{c}", None, (401, 200, 200, 200, 404, 401, 401)),
    "patch": (
        "PATCH",
        "/api/cases/{c}",
        {"changes": {"notes": "matrix"}},
        (401, 403, 200, 200, 404, 401, 401),
    ),
    "delete": ("DELETE", "/api/cases/{f}", None, (401, 403, 403, 204, 404, 401, 401)),
    "history": ("GET", "/api/cases/{c}/history", None, (401, 200, 200, 200, 404, 401, 401)),
    "lock": ("PUT", "/api/cases/{c}/locks/product", None, (401, 403, 200, 200, 404, 401, 401)),
    "unlock": (
        "DELETE",
        "/api/cases/{c}/locks/product",
        None,
        (401, 403, 204, 204, 404, 401, 401),
    ),
    "events": (
        "GET",
        "/api/branches/{b}/events?client_id=matrix",
        None,
        (401, 200, 200, 200, 404, 401, 401),
    ),
    "index page": ("GET", "/", None, (303, 200, 200, 200, 200, 303, 303)),
    "branch page": ("GET", "/branch/{b}", None, (303, 200, 200, 200, 404, 303, 303)),
    "case page": ("GET", "/branch/{b}/cases/{c}", None, (303, 200, 200, 200, 404, 303, 303)),
    "healthz": ("GET", "/healthz", None, (200,) * 7),
    "readyz": ("GET", "/readyz", None, (200,) * 7),
    "metrics": ("GET", "/metrics", None, (200,) * 7),
}


class Principals:
    """One logged-in caller per role, made once for the module."""

    def __init__(self, server: LiveServer, url: str, world: World) -> None:
        self.server = server
        self.url = url
        self.world = world
        self.callers: dict[str, Caller] = {
            role: sign_in(server.url, email) for role, email in ACCOUNTS.items()
        }
        run_admin(
            url, "create_user", email="frank@example.com", name="Frank Gone", password=PASSWORD
        )
        run_admin(
            url,
            "add_member",
            email="frank@example.com",
            branch_id=world.branches["downtown"],
            role="editor",
        )
        frank = sign_in(server.url, "frank@example.com")
        run_admin(url, "deactivate_user", email="frank@example.com")
        self.callers["deactivated"] = frank
        alice = sign_in(server.url, "alice@example.com")
        assert alice.http.post("/api/auth/logout", headers=alice.headers()).status_code == 204
        # The browser dropped the cookie; an attacker who copied it did not.
        alice.http.cookies.set(SESSION_COOKIE, alice.token)
        self.callers["revoked"] = alice
        self.anonymous = httpx.Client(base_url=server.url, timeout=15)

    def client(self, role: str) -> tuple[httpx.Client, dict[str, str]]:
        if role == "anonymous":
            return self.anonymous, {"X-Client-Id": "anon"}
        caller = self.callers[role]
        return caller.http, caller.headers(client_id=f"matrix-{role}")

    def fresh_case(self) -> int:
        dave = self.callers["manager"]
        response = dave.http.post(
            f"/api/branches/{self.world.branches['downtown']}/cases",
            json={"customer_name": "To delete"},
            headers=dave.headers(),
        )
        assert response.status_code == 201
        return int(response.json()["id"])

    def close(self) -> None:
        for caller in self.callers.values():
            caller.http.close()
        self.anonymous.close()


@pytest.fixture(scope="module")
def authz(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("authz"), migrated_template) as started:
        yield started


@pytest.fixture(scope="module")
def principals(authz: Live) -> Iterator[Principals]:
    server, world, url = authz
    made = Principals(server, url, world)
    yield made
    made.close()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("endpoint", list(MATRIX))
def test_authorization_matrix(principals: Principals, endpoint: str, role: str) -> None:
    method, template, body, expected = MATRIX[endpoint]
    want = expected[ROLES.index(role)]
    world = principals.world
    http, headers = principals.client(role)
    temporary: Caller | None = None
    if endpoint == "logout" and role in ACCOUNTS:
        # Logging out the shared session would spoil the other rows.
        temporary = sign_in(principals.server.url, ACCOUNTS[role])
        http, headers = temporary.http, temporary.headers()
    path = template.format(
        b=world.branches["downtown"],
        c=world.cases["laptop"],
        f=principals.fresh_case() if "{f}" in template else 0,
    )
    try:
        if endpoint == "events":
            with http.stream(method, path, headers=headers) as response:
                status = response.status_code
                if status != 200:
                    response.read()
        else:
            response = http.request(method, path, json=body, headers=headers)
            status = response.status_code
        assert status == want, (endpoint, role, status, response.text if status != 200 else "")
        if status >= 400 and endpoint not in ("branch page", "case page", "events"):
            error = response.json()
            assert set(error) >= {"error", "message"}
        if status in (301, 302, 303, 307):
            assert response.headers["location"].startswith("/login")
        if endpoint == "lock" and status == 200:
            released = http.delete(path, headers=headers)
            assert released.status_code == 204
    finally:
        if temporary is not None:
            temporary.http.close()


# --- no branch leaks into another --------------------------------------------


def _case_ids(events: list[Received]) -> set[int]:
    ids: set[int] = set()
    for event in events:
        data = event.data or {}
        if "case" in data:
            ids.add(int(data["case"]["id"]))
        if "case_id" in data:
            ids.add(int(data["case_id"]))
        if "lock" in data:
            ids.add(int(data["lock"]["case_id"]))
    return ids


async def _until_ready(reader: EventReader) -> list[Received]:
    seen: list[Received] = []
    while True:
        item = await reader.next(timeout=10, skip=())
        seen.append(item)
        if item.event == "ready":
            return seen


async def test_no_branch_leaks_into_another(authz: Live) -> None:
    server, world, _url = authz
    downtown, airport = world.branches["downtown"], world.branches["airport"]
    downtown_cases = {world.cases["phone"], world.cases["laptop"]}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=15) as alice_http,
        httpx.AsyncClient(base_url=server.url, timeout=15) as erin_http,
    ):
        alice = await alice_http.post(
            "/api/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
        )
        write = {"X-CSRF-Token": alice.json()["csrf_token"], "X-Client-Id": "alice-leak"}
        erin = await erin_http.post(
            "/api/auth/login", json={"email": "erin@example.com", "password": PASSWORD}
        )
        assert erin.status_code == 200
        # Downtown's ids run far ahead of Airport's.
        for n in range(25):
            response = await alice_http.patch(
                f"/api/cases/{world.cases['phone']}",
                json={"changes": {"notes": f"downtown secret {n}"}},
                headers=write,
            )
            assert response.status_code == 200
        downtown_head = int(
            (await alice_http.get(f"/api/branches/{downtown}/cases")).json()["last_event_id"]
        )
        snapshot = (await erin_http.get(f"/api/branches/{airport}/cases")).json()
        airport_head = int(snapshot["last_event_id"])
        assert downtown_head > airport_head + 10
        assert {c["branch_id"] for c in snapshot["cases"]} == {airport}
        assert "downtown secret" not in str(snapshot)

        base = f"/api/branches/{airport}/events?client_id=erin-leak"
        resumes: list[tuple[str, dict[str, str]]] = [
            (f"{base}&last_event_id=0", {}),  # everything Airport ever had
            (f"{base}&last_event_id={downtown_head - 3}", {}),  # an id from Downtown's range
            (base, {"Last-Event-ID": str(downtown_head - 1)}),
            (f"{base}&last_event_id={airport_head}", {"Last-Event-ID": "1"}),
        ]
        for path, headers in resumes:
            async with reading(erin_http, path, headers) as stream:
                seen = await _until_ready(stream)
            assert not (_case_ids(seen) & downtown_cases), (path, headers, seen)
            assert "downtown secret" not in repr(seen)
            assert int(seen[-1].id) <= airport_head

        # Live: Alice, in Downtown, edits and locks; Erin's Airport stream sees only Airport.
        async with (
            reading(alice_http, f"/api/branches/{downtown}/events?client_id=alice-leak") as alices,
            reading(erin_http, base) as erins,
        ):
            await alices.next("ready")
            ready = await erins.next("ready", skip=())
            assert "Alice Johnson" not in str(ready.data["presence"])
            phone = world.cases["phone"]
            assert (
                await alice_http.put(f"/api/cases/{phone}/locks/notes", headers=write)
            ).is_success
            assert (
                await alice_http.patch(
                    f"/api/cases/{phone}",
                    json={"changes": {"notes": "downtown secret live"}},
                    headers=write,
                )
            ).is_success
            assert (
                await alice_http.patch(
                    f"/api/cases/{world.cases['airport']}",
                    json={"changes": {"notes": "airport news"}},
                    headers=write,
                )
            ).is_success
            update = await erins.next("case-updated", skip=("heartbeat",))
            assert update.data["case_id"] == world.cases["airport"]
            rest = await erins.drain(quiet=0.5)
            assert not (_case_ids(rest) & downtown_cases)
            assert "downtown secret" not in repr(rest) and "Alice Johnson" not in repr(
                [e for e in rest if e.event == "presence"]
            )
            await alice_http.delete(f"/api/cases/{phone}/locks/notes", headers=write)


# --- streams close within a heartbeat of losing access ------------------------


async def _stream_closes_after(server: LiveServer, email: str, branch: int, cut: Any) -> float:
    """Seconds from ``cut()`` returning until the server ended the stream."""
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http:
        login = await http.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200
        csrf = login.json()["csrf_token"]
        async with reading(http, f"/api/branches/{branch}/events?client_id=cut") as stream:
            await stream.next("ready")
            await asyncio.sleep(0.3)
            await cut(http, csrf)
            started = time.monotonic()
            while True:
                item = await asyncio.wait_for(stream.queue.get(), HEARTBEAT * 5)
                if item is None:
                    break
                assert item.event in ("heartbeat", "presence", "lock-released"), item
            return time.monotonic() - started


@pytest.mark.parametrize("how", ["revoked session", "deactivated user", "membership removed"])
async def test_stream_closes_within_one_heartbeat_of_losing_access(authz: Live, how: str) -> None:
    server, world, url = authz
    downtown = world.branches["downtown"]
    email = f"cut-{how.split()[0]}@example.com"
    await run_admin_async(url, "create_user", email=email, name="Cut Off", password=PASSWORD)
    await run_admin_async(url, "add_member", email=email, branch_id=downtown, role="editor")

    async def cut(http: httpx.AsyncClient, csrf: str) -> None:
        if how == "revoked session":
            response = await http.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})
            assert response.status_code == 204
        elif how == "deactivated user":
            await run_admin_async(url, "deactivate_user", email=email)
        else:
            await run_admin_async(url, "remove_member", email=email, branch_id=downtown)

    elapsed = await _stream_closes_after(server, email, downtown, cut)
    # One heartbeat, plus slack for a loaded two-core machine.
    assert elapsed <= HEARTBEAT + 1.0, f"{how}: stream still open after {elapsed:.2f}s"
