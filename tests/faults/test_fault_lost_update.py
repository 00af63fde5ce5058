"""A lost-update checker in the spirit of Jepsen's, on one node and on two.

N clients write unique values to the same two fields of one case, each save
fenced by ``expected`` (the last value that client saw) and carrying an
``Idempotency-Key`` that stays the same across retries; with two nodes they
are spread over both and fail over to the other one. A nemesis injects
faults while they write: SIGKILL of the server and a restart on the same
SQLite file; a frozen PostgreSQL; SIGKILL of one of two nodes (Redis +
PostgreSQL) and a replacement on its port; Redis restarted with its data
gone (meanwhile fenced saves are still acknowledged, unfenced ones and locks
get 503, and a lock token from before is refused after). Afterwards the
audit history must show:

* every acknowledged write, exactly once, at the version its answer named;
* versions growing by exactly one per entry, no gaps, no repeats;
* per field, each entry's ``old`` is the previous entry's ``new`` (nothing
  overwritten unseen) and every value is one some client really sent;
* every client reads the same final state, on every node, which is the
  history's last word.

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
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster import Cluster, seeded_postgres, two_nodes
from conftest import LIVE_ENV, seeded_sqlite
from faultkit import SESSION_COOKIE, case_history, login_cookie, scale
from live import LiveServer
from servers import PostgresServer, RedisServer

FIELDS = ("notes", "product")
CLIENTS = scale(4, 10)
DURATION = scale(8.0, 60.0)
MIN_FAULTS = 2  # every nemesis injects at least this many, however slow the machine
FAULT_GRACE = 60.0  # seconds past DURATION a slow machine may take to reach MIN_FAULTS
EMAILS = ("alice@example.com", "bob@example.com", "dave@example.com")


@dataclass
class History:
    acked: dict[str, int] = field(default_factory=dict)  # value -> version it was acked at
    sent: set[str] = field(default_factory=set)
    indeterminate: set[str] = field(default_factory=set)
    conflicts: int = 0
    unavailable: int = 0
    failovers: int = 0  # requests that went to the other node because theirs refused
    fault_active: bool = False  # set by a nemesis while its fault lasts
    acked_during_fault: int = 0
    stop_at: float = float("inf")  # clients write until then; set once the nemesis is done


def more_faults(faults: int, until: float, margin: float) -> bool:
    """Whether a nemesis goes on: until ``margin`` before the end, and past it (for at
    most ``FAULT_GRACE``) while fewer than ``MIN_FAULTS`` faults fitted in, since a
    restart takes seconds on a loaded machine."""
    now = time.monotonic()
    return now < until - margin or (faults < MIN_FAULTS and now < until + FAULT_GRACE)


@dataclass
class Route:
    """A client's way to the nodes: its own first, the next when that one refuses a
    connection (a load balancer's failover)."""

    http: httpx.AsyncClient
    urls: Sequence[str]
    history: History

    async def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for url in self.urls[:-1]:
            try:
                return await self.http.request(method, url + path, **kwargs)
            except httpx.ConnectError:
                self.history.failovers += 1
        return await self.http.request(method, self.urls[-1] + path, **kwargs)


async def client(
    n: int,
    urls: Sequence[str],
    login: tuple[str, str],
    case: int,
    history: History,
    rng: random.Random,
) -> None:
    cookie, csrf = login
    known: dict[str, Any] = {}
    path = f"/api/cases/{case}"
    async with httpx.AsyncClient(cookies={SESSION_COOKIE: cookie}, timeout=10) as http:
        route = Route(http, urls, history)
        for seq in itertools.count():
            if time.monotonic() >= history.stop_at:
                return
            if not known:
                try:
                    current = await route.send("GET", path)
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
            while outcome is None and time.monotonic() < history.stop_at + 20:
                try:
                    response = await route.send("PATCH", path, json=body, headers=headers)
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
                if history.fault_active:
                    history.acked_during_fault += 1
                known = {f: case_json[f] for f in FIELDS}
            elif outcome.status_code == 409:
                error = outcome.json()
                assert error["error"] == "conflict", error
                history.conflicts += 1
                known = {}  # re-read: the other field may have moved too
            else:
                raise AssertionError(f"unexpected {outcome.status_code}: {outcome.text}")


async def run_checker(
    urls: Sequence[str], case: int, nemesis: Callable[[History, float], Awaitable[int]]
) -> tuple[History, int]:
    """Client ``n`` prefers node ``n % len(urls)`` and fails over to the next ones. The
    clients write for ``DURATION`` and on while the nemesis is still injecting faults."""
    history = History()
    async with httpx.AsyncClient(timeout=10) as http:
        for url in urls:
            assert (await http.get(f"{url}/healthz")).status_code == 200
    logins = [
        await asyncio.to_thread(login_cookie, urls[0], EMAILS[n % len(EMAILS)])
        for n in range(CLIENTS)
    ]
    until = time.monotonic() + DURATION
    rng = random.Random(1234)
    routes = [[*urls[n % len(urls) :], *urls[: n % len(urls)]] for n in range(CLIENTS)]
    clients = asyncio.gather(
        *(
            client(n, routes[n], logins[n], case, history, random.Random(rng.random()))
            for n in range(CLIENTS)
        )
    )

    async def faults_then_stop() -> int:
        try:
            return await nemesis(history, until)
        finally:
            history.stop_at = max(until, time.monotonic())

    faults, _ = await asyncio.gather(faults_then_stop(), clients)
    return history, faults


async def verify(urls: Sequence[str], case: int, start: dict[str, Any], history: History) -> None:
    base_url = urls[0]
    cookie, _csrf = await asyncio.to_thread(login_cookie, base_url, "carol@example.com")
    async with httpx.AsyncClient(
        base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=30
    ) as http:
        entries = await case_history(http, f"/api/cases/{case}/history")
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
    # Every client converges on the same state, whichever node it asks.
    views = []
    for email in EMAILS:
        cookie, _ = await asyncio.to_thread(login_cookie, base_url, email)
        async with httpx.AsyncClient(cookies={SESSION_COOKIE: cookie}, timeout=30) as http:
            views += [(await http.get(f"{url}/api/cases/{case}")).json() for url in urls]
    assert all(view == final for view in views)


async def _start_state(base_url: str, case: int) -> dict[str, Any]:
    cookie, _ = await asyncio.to_thread(login_cookie, base_url, "carol@example.com")
    async with httpx.AsyncClient(
        base_url=base_url, cookies={"warrantysync_session": cookie}, timeout=30
    ) as http:
        state: dict[str, Any] = (await http.get(f"/api/cases/{case}")).json()
        return state


@pytest.fixture
def killable_pair(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    with two_nodes(postgres_server, redis_server, tmp_path, redis_db=3) as nodes:
        yield nodes


@pytest.fixture
def pair_on_fragile_redis(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    with two_nodes(postgres_server, redis_server, tmp_path, redis_db=4) as nodes:
        yield nodes


async def test_no_lost_update_across_server_kills(tmp_path: Path, migrated_template: Path) -> None:
    url, world = await asyncio.to_thread(seeded_sqlite, tmp_path, migrated_template)
    env = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}
    servers = [await asyncio.to_thread(LiveServer(env=env, log_path=tmp_path / "server.log").start)]
    port = servers[0].port
    try:
        case = world.cases["phone"]
        start = await _start_state(servers[0].url, case)

        async def kill_and_restart(_history: History, until: float) -> int:
            kills = 0
            while more_faults(kills, until, 1.5):
                await asyncio.sleep(1.5)
                assert servers[-1].process is not None
                servers[-1].process.send_signal(signal.SIGKILL)
                await asyncio.to_thread(servers[-1].wait, 10)
                kills += 1
                replacement = LiveServer(env=env, log_path=tmp_path / "server.log", port=port)
                servers.append(await asyncio.to_thread(replacement.start))
            return kills

        history, kills = await run_checker([servers[0].url], case, kill_and_restart)
        await verify([servers[-1].url], case, start, history)
    finally:
        for server in servers:
            server.kill()
    _report("SIGKILL + restart (SQLite)", history, kills)
    assert kills >= MIN_FAULTS and len(history.acked) > CLIENTS


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

        async def freeze(_history: History, until: float) -> int:
            pauses = 0
            while more_faults(pauses, until, 2):
                await asyncio.sleep(1.0)
                await asyncio.to_thread(postgres_server.pause)
                pauses += 1
                try:
                    await asyncio.sleep(1.5)
                finally:
                    await asyncio.to_thread(postgres_server.resume)
            return pauses

        history, pauses = await run_checker([server.url], case, freeze)
        await verify([server.url], case, start, history)
    finally:
        postgres_server.resume()
        server.kill()
    _report("PostgreSQL frozen", history, pauses)
    assert pauses >= MIN_FAULTS and len(history.acked) > CLIENTS and history.unavailable > 0


@pytest.mark.cluster
@pytest.mark.redis
@pytest.mark.postgresql
async def test_no_lost_update_when_one_of_two_nodes_is_killed(killable_pair: Cluster) -> None:
    nodes = killable_pair
    urls = [node.url for node in nodes.nodes]
    case = nodes.world.cases["phone"]
    start = await _start_state(urls[0], case)

    async def kill_and_replace(history: History, until: float) -> int:
        kills = 0
        while more_faults(kills, until, 2):
            await asyncio.sleep(0.5)
            history.fault_active = True
            try:  # the older of the two live nodes, so the kills alternate between the ports
                await asyncio.to_thread(nodes.replace, nodes.nodes[-2])
            finally:
                history.fault_active = False
            kills += 1
        return kills

    history, kills = await run_checker(urls, case, kill_and_replace)
    await verify(urls, case, start, history)
    _report("SIGKILL of one of two nodes + replacement", history, kills)
    assert kills >= MIN_FAULTS and len(history.acked) > CLIENTS
    # The survivor took over: requests failed over and were acknowledged while a node was down.
    assert history.failovers > 0 and history.acked_during_fault > 0


@pytest.mark.cluster
@pytest.mark.redis
@pytest.mark.postgresql
async def test_no_lost_update_while_redis_restarts_empty(
    pair_on_fragile_redis: Cluster, redis_server: RedisServer
) -> None:
    nodes = pair_on_fragile_redis
    urls = [node.url for node in nodes.nodes]
    case = nodes.world.cases["phone"]
    start = await _start_state(urls[0], case)
    cookie, csrf = await asyncio.to_thread(login_cookie, urls[1], "dave@example.com")
    headers = {"X-CSRF-Token": csrf, "X-Client-Id": "nemesis"}
    async with httpx.AsyncClient(
        base_url=urls[1], cookies={SESSION_COOKIE: cookie}, headers=headers, timeout=10
    ) as probe:
        # The nemesis's own lock, on a field the checker's clients never write.
        lock_url, case_url = f"/api/cases/{case}/locks/issue", f"/api/cases/{case}"

        async def lose_redis(history: History, until: float) -> int:
            outages = 0
            while more_faults(outages, until, 2.5):
                await asyncio.sleep(0.5)
                taken = await _once_redis_answers(partial(probe.put, lock_url))
                assert taken.status_code == 200, taken.text
                token = taken.json()["lock"]["token"]
                await asyncio.to_thread(redis_server.down)
                history.fault_active = True
                try:
                    # No lock can be checked: a lock or a save without `expected` gets 503.
                    for refused in (
                        await probe.patch(case_url, json={"changes": {"issue": "blind"}}),
                        await probe.put(lock_url),
                    ):
                        assert refused.status_code == 503, refused.text
                        assert refused.headers["retry-after"]
                    await asyncio.sleep(1.0)
                finally:
                    history.fault_active = False
                    await asyncio.to_thread(redis_server.up, wipe_data=True)
                outages += 1
                # The token from before the loss names no lock any more.
                stale = {"changes": {"issue": "stale"}, "lock_tokens": {"issue": token}}
                lost = await _once_redis_answers(partial(probe.patch, case_url, json=stale))
                assert lost.status_code == 409 and lost.json()["error"] == "lock_lost", lost.text
            return outages

        history, outages = await run_checker(urls, case, lose_redis)
    await verify(urls, case, start, history)
    _report("Redis restarted empty under two nodes", history, outages)
    assert outages >= MIN_FAULTS and len(history.acked) > CLIENTS
    # Fenced saves never needed Redis: none was refused, some were acknowledged mid-outage.
    assert history.unavailable == 0 and history.acked_during_fault > 0


async def _once_redis_answers(
    request: Callable[[], Awaitable[httpx.Response]],
) -> httpx.Response:
    """The first answer that is not 503 (nodes reconnecting to a restarted Redis), within 10 s."""
    for _ in range(100):
        answer = await request()
        if answer.status_code != 503:
            break
        await asyncio.sleep(0.1)
    return answer


def _report(what: str, history: History, faults: int) -> None:
    during = history.acked_during_fault
    print(
        f"\nlost-update checker, {what}: {CLIENTS} clients, {DURATION:.0f}s, {faults} faults;"
        f" {len(history.acked)} acknowledged{f' ({during} during a fault)' if during else ''},"
        f" {history.conflicts} conflicts, {history.unavailable} 503s,"
        f" {history.failovers} failovers, {len(history.indeterminate)} indeterminate"
    )
