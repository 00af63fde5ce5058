"""SIGKILL of one of two nodes under editing clients (docs/security.md, "Failures").

Two nodes share Redis and PostgreSQL. ``CLIENTS`` simulated browser tabs,
half streaming from each node over bare sockets, edit the branch's cases over
HTTP the way the browser's saver does: ``expected`` = the value the tab's own
stream last showed, an ``Idempotency-Key`` kept across retries, the same
request again after a backoff when no answer came, and the other node when
its own refuses the connection (what the load balancer does). The first
``LOCKERS`` tabs hold a field lock while they "type", renewing it every
``LOCK_TTL / 3``. Then node A is SIGKILLed, and:

* no acknowledged edit is lost: every 200's value is in the audit history at
  the version it named, none is applied twice, versions have no gap;
* every tab of node A reconnects to node B as connection.js does (the delays
  and jitter of backoff.js, resuming from its last id) and is caught up —
  ``ready`` after the replay — within 35 s of the kill; in the end every tab
  has applied every event id once and in order, and its view (fields,
  versions and locks, built from events alone) equals the snapshot;
* A's lock holders leave their cells at the kill and their DELETE went to the
  dead node: each such lock is gone within DISCONNECT_GRACE + LOCK_TTL + the
  presence lease (+ slack for a loaded machine);
* the reconnects reach node B spread by the jitter (the ``server_time`` of
  their ``ready``), not as one spike.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any

import httpx
import pytest

from browsertab import DELAYS_MS, Release, Tab, follow, lock_map, request, view_of
from cluster import Cluster, two_nodes
from faultkit import SESSION_COOKIE, case_history, login_cookie, scale
from servers import PostgresServer, RedisServer
from warrantysync.services.presence.redis import LEASE_TTL

pytestmark = [pytest.mark.cluster, pytest.mark.redis, pytest.mark.postgresql]

CLIENTS = scale(60, 200)
LOCKERS = scale(16, 32)  # tabs 0..LOCKERS-1; tab n locks LOCK_FIELDS[n % 2] of case n // 2
CASES = LOCKERS // 2
EDIT_RATE = 12.0  # unlocked edits per second over all tabs: a busy branch, kind to 2 cores
BEFORE_KILL = scale(4.0, 20.0)
AFTER_KILL = scale(8.0, 30.0)
LOCK_TTL = 6.0
GRACE = 1.0
CATCH_UP_WITHIN = 35.0
LOCKS_GONE_WITHIN = GRACE + LOCK_TTL + LEASE_TTL + 2.0  # + sweeps and scheduling
FIELDS = ("notes", "product", "serial_number", "issue")
LOCK_FIELDS = ("issue", "notes")
EMAILS = ("alice@example.com", "bob@example.com")
DEAD, ALIVE = 0, 1  # node indexes


@dataclass
class Run:
    """What every tab shares: the nodes, the cases, and the record of edits and releases."""

    urls: list[str]
    ports: list[int]
    branch: int
    cases: list[int]
    start: dict[int, dict[str, Any]]  # the view every tab starts from
    acked: list[tuple[int, str, str, int]] = field(default_factory=list)  # case, field, value, v
    sent: set[str] = field(default_factory=set)
    answered: set[str] = field(default_factory=set)
    refusals: Counter[str] = field(default_factory=Counter)
    released: list[Release] = field(default_factory=list)  # as the watcher saw them


async def _save(tab: Tab, run: Run, case: int, name: str, tokens: dict[str, str]) -> None:
    value = f"{tab.client_id}-{next(tab.seq)}"
    body: dict[str, Any] = {"changes": {name: value}, "expected": {name: tab.view[case][name]}}
    if tokens:
        body["lock_tokens"] = tokens
    run.sent.add(value)
    headers = {**tab.headers, "Idempotency-Key": value}
    answer = await request(tab, run.urls, "PATCH", f"/api/cases/{case}", json=body, headers=headers)
    if answer is None:
        return
    run.answered.add(value)
    if answer.status_code == 200:
        saved = answer.json()
        assert saved[name] == value
        run.acked.append((case, name, value, saved["version"]))
    else:
        assert answer.status_code in (409, 423), answer.text
        run.refusals[answer.json()["error"]] += 1


async def _type_under_lock(tab: Tab, run: Run, until: float) -> None:
    """Focus (PUT lock), type renewing it every LOCK_TTL / 3, save with its token, blur."""
    case, name = run.cases[tab.n // 2], LOCK_FIELDS[tab.n % 2]
    lock_path = f"/api/cases/{case}/locks/{name}"
    taken = await request(tab, run.urls, "PUT", lock_path, headers=tab.headers)
    if taken is None or taken.status_code != 200:
        return
    token = taken.json()["lock"]["token"]
    done = min(until, time.monotonic() + tab.rng.uniform(2.0, 5.0))
    while (left := done - time.monotonic()) > 0:
        await asyncio.sleep(min(left, LOCK_TTL / 3))
        if time.monotonic() < done:
            await request(tab, run.urls, "PUT", lock_path, headers=tab.headers)
    await _save(tab, run, case, name, {name: token})
    await request(tab, run.urls, "DELETE", lock_path, headers=tab.headers)


async def edit(tab: Tab, run: Run, until: float, *, locking: bool) -> None:
    period = (CLIENTS - LOCKERS) / EDIT_RATE
    while time.monotonic() < until:
        if locking:
            await _type_under_lock(tab, run, until)
            await asyncio.sleep(tab.rng.uniform(0.3, 1.0))
            continue
        await asyncio.sleep(tab.rng.uniform(0.5, 1.5) * period)
        if time.monotonic() < until:
            await _save(tab, run, tab.rng.choice(run.cases), tab.rng.choice(FIELDS), {})


@pytest.fixture
def nodes(
    postgres_server: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> Iterator[Cluster]:
    with two_nodes(
        postgres_server,
        redis_server,
        tmp_path,
        redis_db=5,
        lock_ttl=str(LOCK_TTL),
        disconnect_grace=str(GRACE),
        max_streams_per_user=str(4 * CLIENTS),
        # The lockers are two users' many tabs, each holding one lock.
        max_locks_per_user=str(LOCKERS),
    ) as running:
        yield running


async def test_sigkill_of_one_of_two_nodes_under_editing_clients(nodes: Cluster) -> None:
    async with contextlib.AsyncExitStack() as stack:
        run, tabs, watcher = await _set_up(nodes, stack)
        everyone = [*tabs, watcher]
        tasks = [asyncio.create_task(follow(tab, run.ports, run.branch)) for tab in everyone]
        stack.push_async_callback(_cancel, tasks)  # every task, editors included
        editors: dict[int, asyncio.Task[None]] = {}
        opened = time.monotonic()
        assert await _wait_for(lambda: all(t.readies for t in everyone), opened + 60)
        open_s = time.monotonic() - opened
        until = time.monotonic() + BEFORE_KILL + AFTER_KILL
        for tab in tabs:
            editors[tab.n] = asyncio.create_task(edit(tab, run, until, locking=tab.n < LOCKERS))
        tasks += editors.values()
        await asyncio.sleep(BEFORE_KILL)
        killed_at, doomed_locks = await _kill(nodes, run, tabs, editors, until)
        tasks += editors.values()
        doomed = [tab for tab in tabs if tab.home == DEAD]
        back = await _caught_up(doomed, killed_at)
        dead = {tab.client_id for tab in doomed}
        gone = await _locks_gone(run, tabs, doomed_locks, dead, killed_at)
        await asyncio.gather(*editors.values())
        final = await _converged(run, everyone, watcher)
        await _no_acknowledged_edit_lost(run, watcher, final)
    # When each reconnect reached node B (its home refused at once, on loopback): the storm
    # as B's listening socket saw it. Without jitter all would arrive within milliseconds;
    # backoff.js spreads them over ±JITTER of the first step, far above a tenth of it.
    arrivals = [min(at for at in tab.attempts if at > killed_at) - killed_at for tab in doomed]
    spread = max(arrivals) - min(arrivals)
    _report(run, tabs, open_s, arrivals, back, gone)
    assert spread > DELAYS_MS[0] / 1000 / 10, f"reconnects not spread: all within {spread:.3f}s"


async def _set_up(nodes: Cluster, stack: contextlib.AsyncExitStack) -> tuple[Run, list[Tab], Tab]:
    """Log in, create the cases, load the snapshot every tab starts from."""
    urls, world = [node.url for node in nodes.nodes], nodes.world
    branch = world.branches["downtown"]
    logins = [
        await asyncio.to_thread(login_cookie, urls[ALIVE], email)
        for email in (*EMAILS, "carol@example.com")  # Carol, a viewer, only watches
    ]
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS // 2)
    clients = [
        await stack.enter_async_context(
            httpx.AsyncClient(cookies={SESSION_COOKIE: cookie}, timeout=10, limits=limits)
        )
        for cookie, _ in logins
    ]
    cases = [world.cases["phone"], world.cases["laptop"]]
    for n in range(CASES - len(cases)):
        created = await clients[0].post(
            f"{urls[ALIVE]}/api/branches/{branch}/cases",
            json={"customer_name": f"Customer {n}"},
            headers={"X-CSRF-Token": logins[0][1]},
        )
        assert created.status_code == 201, created.text
        cases.append(created.json()["id"])
    snapshot = (await clients[2].get(f"{urls[ALIVE]}/api/branches/{branch}/cases")).json()
    head, view = int(snapshot["last_event_id"]), view_of(snapshot["cases"], FIELDS)
    run = Run(urls, [node.port for node in nodes.nodes], branch, cases, copy.deepcopy(view))

    def tab(n: int, user: int, home: int) -> Tab:
        cookie, csrf = logins[user]
        return Tab(n, clients[user], cookie, csrf, home, copy.deepcopy(view), head, Random(n))

    watcher = tab(CLIENTS, 2, ALIVE)
    watcher.releases = run.released
    return run, [tab(n, (n // 2) % 2, n % 2) for n in range(CLIENTS)], watcher


async def _wait_for(done: Callable[[], bool], deadline: float) -> bool:
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _users(tabs: list[Tab]) -> list[Tab]:
    """One tab per user: each user's snapshot shows only that user's client ids."""
    return list({id(tab.http): tab for tab in tabs}.values())


async def _snapshot(run: Run, reader: Tab) -> dict[str, Any]:
    url = f"{run.urls[ALIVE]}/api/branches/{run.branch}/cases"
    snapshot: dict[str, Any] = (await reader.http.get(url)).json()
    return snapshot


async def _locks_of(run: Run, tabs: list[Tab], clients: set[str]) -> dict[tuple[int, str], str]:
    """The locks held by tabs named in ``clients``, asked of each user about their own."""
    held: dict[tuple[int, str], str] = {}
    for reader in _users(tabs):
        for key, (_user, client) in lock_map((await _snapshot(run, reader))["locks"]).items():
            if client in clients:
                held[key] = client
    return held


async def _kill(
    nodes: Cluster, run: Run, tabs: list[Tab], editors: dict[int, asyncio.Task[None]], until: float
) -> tuple[float, dict[tuple[int, str], str]]:
    """SIGKILL node A while its lockers hold locks; they leave their cells and edit on unlocked."""
    dead = {tab.client_id for tab in tabs if tab.home == DEAD}
    for _ in range(100):
        if await _locks_of(run, tabs, dead):
            break
        await asyncio.sleep(0.1)
    lockers = [tab for tab in tabs if tab.home == DEAD and tab.n < LOCKERS]
    for tab in lockers:  # cancelled before the kill, they cannot reach node B with a DELETE
        editors[tab.n].cancel()
    killed_at = time.monotonic()
    nodes.nodes[DEAD].kill()
    await _cancel([editors[tab.n] for tab in lockers])
    for tab in lockers:
        editors[tab.n] = asyncio.create_task(edit(tab, run, until, locking=False))
    held = await _locks_of(run, tabs, dead)  # read after the kill: nothing can add to it now
    assert held, "node A's lockers held no lock at the kill; the test proves nothing"
    return killed_at, held


async def _caught_up(doomed: list[Tab], killed_at: float) -> list[tuple[float, float]]:
    """(seconds after the kill, server_time) of each dead node's tab's first ``ready`` on B."""

    def back(tab: Tab) -> tuple[float, float] | None:
        for at, node, server_time in tab.readies:
            if at > killed_at and node == ALIVE:
                return at - killed_at, server_time
        return None

    await _wait_for(lambda: all(back(t) for t in doomed), killed_at + CATCH_UP_WITHIN)
    late = [tab.client_id for tab in doomed if back(tab) is None]
    assert not late, f"not back and caught up within {CATCH_UP_WITHIN}s: {late}"
    found = [back(tab) for tab in doomed]
    return [item for item in found if item is not None]


async def _locks_gone(
    run: Run, tabs: list[Tab], doomed: dict[tuple[int, str], str], dead: set[str], killed_at: float
) -> list[tuple[float, str]]:
    """Each lock of a dead node's tab is released in time; (seconds after the kill, reason).

    Only tab n ever locks its (case, field), so the field names the lock.
    """
    deadline = killed_at + LOCKS_GONE_WITHIN
    keys = set(doomed)

    def released() -> dict[tuple[int, str], tuple[float, str]]:
        return {key: (at, why) for at, key, why in run.released if at > killed_at and key in keys}

    await _wait_for(lambda: len(released()) == len(keys), deadline)
    leaked = await _locks_of(run, tabs, dead)
    assert not leaked, f"locks of the dead node's tabs outlived {LOCKS_GONE_WITHIN}s: {leaked}"
    seen = released()
    assert seen.keys() == keys, f"no lock-released for {keys - seen.keys()}"
    assert all(at <= deadline for at, _ in seen.values())
    return [(at - killed_at, why) for at, why in seen.values()]


async def _converged(run: Run, everyone: list[Tab], watcher: Tab) -> dict[str, Any]:
    """Every tab has applied every id once, in order, and sees what its user's snapshot says."""
    deadline = time.monotonic() + 20
    while True:
        seen = {id(tab.http): await _snapshot(run, tab) for tab in _users(everyone)}
        apart = [t for t in everyone if (t.last_id, t.view, t.locks) != _seen_by(t, seen)]
        if not apart or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert not apart, [(t.client_id, t.last_id, t.locks, _seen_by(t, seen)[::2]) for t in apart[:3]]
    snapshot = seen[id(watcher.http)]
    anomalies = {t.client_id: dict(t.anomalies) for t in everyone if t.anomalies}
    assert not anomalies, f"gaps, duplicates or resyncs: {anomalies}"
    return snapshot


def _seen_by(tab: Tab, snapshots: dict[int, dict[str, Any]]) -> tuple[int, Any, Any]:
    """(head, view, locks) of the snapshot of the tab's user."""
    snapshot = snapshots[id(tab.http)]
    view = view_of(snapshot["cases"], FIELDS)
    return int(snapshot["last_event_id"]), view, lock_map(snapshot["locks"])


async def _no_acknowledged_edit_lost(run: Run, watcher: Tab, final: dict[str, Any]) -> None:
    applied: dict[str, tuple[int, str, int]] = {}  # value -> case, field, version
    versions = view_of(final["cases"], FIELDS)
    for case in run.cases:
        url = f"{run.urls[ALIVE]}/api/cases/{case}/history"
        start = run.start[case]["version"]
        ours = sorted(
            (e for e in await case_history(watcher.http, url) if e["version"] > start),
            key=lambda e: e["version"],
        )
        assert [e["version"] for e in ours] == list(range(start + 1, versions[case]["version"] + 1))
        for entry in ours:
            assert entry["new"] not in applied, f"{entry['new']} applied twice"
            applied[entry["new"]] = (case, entry["field"], entry["version"])
    lost = [ack for ack in run.acked if applied.get(ack[2]) != (ack[0], ack[1], ack[3])]
    assert not lost, f"acknowledged but lost: {lost[:5]}"
    assert set(applied) <= run.sent, "a value nobody sent"
    unexplained = set(applied) - {value for _, _, value, _ in run.acked} - (run.sent - run.answered)
    assert not unexplained, f"applied but refused: {sorted(unexplained)[:5]}"


def _report(
    run: Run,
    tabs: list[Tab],
    open_s: float,
    arrivals: list[float],
    back: list[tuple[float, float]],
    gone: list[tuple[float, str]],
) -> None:
    def span(values: list[float]) -> str:
        return f"{min(values):.2f}/{statistics.median(values):.2f}/{max(values):.2f}s"

    served = max(s for _, s in back) - min(s for _, s in back)
    survivors = sum(len(tab.attempts) for tab in tabs if tab.home == ALIVE)
    print(
        f"\nnode kill: {CLIENTS} tabs ({LOCKERS} locking) on 2 nodes, streams opened in"
        f" {open_s:.1f}s; {len(run.acked)} edits acknowledged, {dict(run.refusals)},"
        f" {len(run.sent - run.answered)} in doubt, {sum(t.retries for t in tabs)} retries;"
        f" {len(back)} tabs of the dead node reconnected after {span(arrivals)}"
        f" (min/median/max) and were back and caught up after {span([a for a, _ in back])},"
        f" their `ready`s {served:.2f}s apart on the survivor's clock; {survivors} reconnects"
        f" of the survivor's tabs; {len(gone)} orphaned locks released after"
        f" {span([at for at, _ in gone])} ({dict(Counter(why for _, why in gone))};"
        f" bound {LOCKS_GONE_WITHIN:.0f}s)"
    )
