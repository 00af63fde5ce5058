"""A lost-update checker in the spirit of Jepsen's, on one node.

N clients write unique values to the same two fields of one case, each save
fenced by ``expected`` (the last value that client saw) and carrying an
``Idempotency-Key`` that stays the same across retries. A nemesis injects
faults while they write: SIGKILL of the server and a restart on the same
SQLite file, or a frozen PostgreSQL. Afterwards the audit history must show:

* every acknowledged write, exactly once, at the version its answer named;
* versions growing by exactly one per entry, no gaps, no repeats;
* per field, each entry's ``old`` is the previous entry's ``new`` (nothing
  overwritten unseen) and every value is one some client really sent;
* every client reads the same final state, which is the history's last word.

Writes whose answer never came (the server died mid-request) are
indeterminate: they may appear at most once, or not at all.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import LIVE_ENV, seeded_sqlite
from faultkit import login_cookie, scale, seeded_postgres
from live import LiveServer
from servers import PostgresServer

FIELDS = ("notes", "product")
CLIENTS = scale(4, 10)
DURATION = scale(8.0, 60.0)
EMAILS = ("alice@example.com", "bob@example.com", "dave@example.com")


@dataclass
class History:
    acked: dict[str, int] = field(default_factory=dict)  # value -> version it was acked at
    sent: set[str] = field(default_factory=set)
    indeterminate: set[str] = field(default_factory=set)
    conflicts: int = 0
    unavailable: int = 0


async def client(
    n: int,
    base_url: str,
    login: tuple[str, str],
    case: int,
    until: float,
    history: History,
    rng: random.Random,
) -> None:
    cookie, csrf = login
    known: dict[str, Any] = {}
    async with httpx.AsyncClient(
        base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=10
    ) as http:
        for seq in itertools.count():
            if time.monotonic() >= until:
                return
            if not known:
                try:
                    current = await http.get(f"/api/cases/{case}")
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)
                    continue
                if current.status_code != 200:
                    await asyncio.sleep(0.2)
                    continue
                known = {f: current.json()[f] for f in FIELDS}
            name = rng.choice(FIELDS)
            value = f"c{n}-{seq}"
            history.sent.add(value)
            body = {"changes": {name: value}, "expected": {name: known[name]}}
            headers = {"X-CSRF-Token": csrf, "Idempotency-Key": f"{value}-{os.getpid()}"}
            outcome: httpx.Response | None = None
            while outcome is None and time.monotonic() < until + 20:
                try:
                    response = await http.patch(f"/api/cases/{case}", json=body, headers=headers)
                except httpx.HTTPError:
                    await asyncio.sleep(0.2)  # no answer: the write is in doubt; retry it
                    continue
                if response.status_code in (502, 503, 504):
                    history.unavailable += 1
                    await asyncio.sleep(0.2)
                    continue
                outcome = response
            if outcome is None:
                history.indeterminate.add(value)
                return
            if outcome.status_code == 200:
                case_json = outcome.json()
                assert case_json[name] == value
                history.acked[value] = case_json["version"]
                known = {f: case_json[f] for f in FIELDS}
            elif outcome.status_code == 409:
                error = outcome.json()
                assert error["error"] == "conflict", error
                history.conflicts += 1
                known = {}  # re-read: the other field may have moved too
            else:
                raise AssertionError(f"unexpected {outcome.status_code}: {outcome.text}")


async def run_checker(
    base_url: Callable[[], str], case: int, nemesis: Callable[[float], Awaitable[int]]
) -> tuple[History, int]:
    history = History()
    async with httpx.AsyncClient(timeout=10) as http:
        initial = (await http.get(f"{base_url()}/healthz")).status_code
        assert initial == 200
    logins = [
        await asyncio.to_thread(login_cookie, base_url(), EMAILS[n % len(EMAILS)])
        for n in range(CLIENTS)
    ]
    until = time.monotonic() + DURATION
    rng = random.Random(1234)
    faults, *_ = await asyncio.gather(
        nemesis(until),
        *(
            client(n, base_url(), logins[n], case, until, history, random.Random(rng.random()))
            for n in range(CLIENTS)
        ),
    )
    return history, faults


async def verify(base_url: str, case: int, start: dict[str, Any], history: History) -> None:
    cookie, _csrf = await asyncio.to_thread(login_cookie, base_url, "carol@example.com")
    async with httpx.AsyncClient(
        base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=30
    ) as http:
        entries: list[dict[str, Any]] = []
        before: int | None = None
        while True:
            params = {"limit": 500} | ({"before": before} if before else {})
            page = (await http.get(f"/api/cases/{case}/history", params=params)).json()
            entries += page
            if len(page) < 500:
                break
            before = page[-1]["id"]
        final = (await http.get(f"/api/cases/{case}")).json()
    ours = sorted(
        (e for e in entries if e["version"] > start["version"]), key=lambda e: e["version"]
    )
    versions = [e["version"] for e in ours]
    assert versions == list(range(start["version"] + 1, final["version"] + 1)), "version gap"
    values = [e["new"] for e in ours]
    assert len(values) == len(set(values)), "a write was applied twice"
    assert set(values) <= history.sent, "a value nobody sent"
    applied = {e["new"]: e["version"] for e in ours}
    for value, version in history.acked.items():
        assert applied.get(value) == version, f"acknowledged {value}@{version} lost"
    unexplained = set(applied) - set(history.acked) - history.indeterminate
    assert not unexplained, f"applied but never acknowledged: {sorted(unexplained)[:5]}"
    for name in FIELDS:
        chain = [e for e in ours if e["field"] == name]
        previous = start[name]
        for entry in chain:
            assert entry["old"] == previous, f"{name}: {entry} overwrote an unseen value"
            previous = entry["new"]
        assert final[name] == previous
    # Every client converges on the same state.
    views = []
    for email in EMAILS:
        cookie, _ = await asyncio.to_thread(login_cookie, base_url, email)
        async with httpx.AsyncClient(
            base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=30
        ) as http:
            views.append((await http.get(f"/api/cases/{case}")).json())
    assert all(view == final for view in views)


async def _start_state(base_url: str, case: int) -> dict[str, Any]:
    cookie, _ = await asyncio.to_thread(login_cookie, base_url, "carol@example.com")
    async with httpx.AsyncClient(
        base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=30
    ) as http:
        state: dict[str, Any] = (await http.get(f"/api/cases/{case}")).json()
        return state


async def test_no_lost_update_across_server_kills(tmp_path: Path, migrated_template: Path) -> None:
    url, world = await asyncio.to_thread(seeded_sqlite, tmp_path, migrated_template)
    env = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}
    servers = [await asyncio.to_thread(LiveServer(env=env, log_path=tmp_path / "server.log").start)]
    port = servers[0].port
    try:
        case = world.cases["phone"]
        start = await _start_state(servers[0].url, case)

        async def kill_and_restart(until: float) -> int:
            kills = 0
            while time.monotonic() < until - 1.5:
                await asyncio.sleep(1.5)
                assert servers[-1].process is not None
                servers[-1].process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(servers[-1].wait, 10)
                kills += 1
                replacement = LiveServer(env=env, log_path=tmp_path / "server.log", port=port)
                servers.append(await asyncio.to_thread(replacement.start))
            return kills

        history, kills = await run_checker(lambda: servers[-1].url, case, kill_and_restart)
        await verify(servers[-1].url, case, start, history)
    finally:
        for server in servers:
            server.kill()
    _report("SIGKILL + restart (SQLite)", history, kills)
    assert kills >= 2 and len(history.acked) > CLIENTS


@pytest.mark.postgresql
async def test_no_lost_update_while_the_database_freezes(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    name = f"lost_{os.getpid()}_{time.monotonic_ns()}"
    url, world = await asyncio.to_thread(seeded_postgres, postgres_server, name)
    env = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url, "WARRANTYSYNC_DATABASE_TIMEOUT": "1"}
    server = await asyncio.to_thread(LiveServer(env=env, log_path=tmp_path / "server.log").start)
    try:
        case = world.cases["phone"]
        start = await _start_state(server.url, case)

        async def freeze(until: float) -> int:
            pauses = 0
            while time.monotonic() < until - 2:
                await asyncio.sleep(1.0)
                await asyncio.to_thread(postgres_server.pause)
                pauses += 1
                try:
                    await asyncio.sleep(1.5)
                finally:
                    await asyncio.to_thread(postgres_server.resume)
            return pauses

        history, pauses = await run_checker(lambda: server.url, case, freeze)
        await verify(server.url, case, start, history)
    finally:
        postgres_server.resume()
        server.kill()
    _report("PostgreSQL frozen", history, pauses)
    assert pauses >= 2 and len(history.acked) > CLIENTS and history.unavailable > 0


def _report(what: str, history: History, faults: int) -> None:
    print(
        f"\nlost-update checker, {what}: {CLIENTS} clients, {DURATION:.0f}s, {faults} faults;"
        f" {len(history.acked)} acknowledged, {history.conflicts} conflicts,"
        f" {history.unavailable} 503s, {len(history.indeterminate)} indeterminate"
    )
