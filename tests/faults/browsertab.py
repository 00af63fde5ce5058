"""A browser tab, simulated cheaply enough for hundreds at once in one test process.

``follow()`` is connection.js's loop over a bare-socket ``RawStream``: open,
apply events until the stream ends, breaks or stays silent past the
watchdog, wait the backoff (or ``goodbye.retry_ms``), resume from the last
applied id. ``Tab.apply`` is the store: it applies each event id at most
once and keeps the tab's view of fields, versions and locks from events
alone. ``request()`` sends like the saver: the same request again after the
backoff when no answer or a 5xx came. The delays, the jitter and the
watchdog slack are read from the browser's own modules, so the simulation
cannot drift from them.

A tab knows two nodes and prefers its ``home``; when home refuses the
connection it goes to the other one at once, as a load balancer would.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

import warrantysync
from faultkit import Frame, RawStream

_JS = Path(warrantysync.__file__).parent / "web" / "static" / "js"

LockKey = tuple[int, str]  # case id, field
# A lock's holder as a tab sees it: (user id, client id), the client id None for other users.
Holder = tuple[int, str | None]
Release = tuple[float, LockKey, str]  # when, (case, field), reason


def _js_constant(module: str, name: str) -> Any:
    """A literal ``export const`` of the browser client."""
    text = (_JS / module).read_text()
    found = re.search(rf"export const {name} = (?:Object\.freeze\()?([^;]+?)\)?;", text)
    assert found, f"{name} not found in {module}"
    return json.loads(found.group(1))


DELAYS_MS: list[int] = _js_constant("backoff.js", "DEFAULT_DELAYS_MS")
JITTER: float = _js_constant("backoff.js", "JITTER")
WATCHDOG_SLACK_MS: int = _js_constant("connection.js", "WATCHDOG_SLACK_MS")


def backoff(attempt: int, rng: random.Random) -> float:
    """backoff.js's ``backoffDelay``, in seconds."""
    base = DELAYS_MS[min(max(attempt, 0), len(DELAYS_MS) - 1)]
    return round(base * (1 - JITTER + 2 * JITTER * rng.random())) / 1000


def holder(lock: dict[str, Any]) -> Holder:
    return lock["user"]["id"], lock["client_id"]


# Who is looking where and who asks for what (docs/protocol.md, "The event
# stream"): news a tab shows, nothing it must apply in order.
EPHEMERAL_NEWS = frozenset(
    {"heartbeat", "presence", "row-presence", "lock-requested", "lock-request-answered"}
)


def lock_map(locks: list[dict[str, Any]]) -> dict[LockKey, Holder]:
    """Public lock JSON (``ready``, ``state``, snapshots) as {(case, field): holder}."""
    return {(lock["case_id"], lock["field"]): holder(lock) for lock in locks}


def view_of(cases: list[dict[str, Any]], fields: Sequence[str]) -> dict[int, dict[str, Any]]:
    """A snapshot's cases as {case id: {field: value, "version": n}}."""
    return {c["id"]: {f: c[f] for f in fields} | {"version": c["version"]} for c in cases}


@dataclass
class Tab:
    """One tab: its stream and what it learnt from it; its requests and their retries."""

    n: int
    http: httpx.AsyncClient  # shared by the tabs of one user
    cookie: str
    csrf: str
    home: int
    view: dict[int, dict[str, Any]]
    last_id: int
    rng: random.Random
    locks: dict[LockKey, Holder] = field(default_factory=dict)
    node: int = -1  # where the current stream is
    heartbeat_s: float = 30.0  # connection.js's guess until `ready` says
    failures: int = 0
    retry_after: float | None = None  # from goodbye.retry_ms
    readies: list[tuple[float, int, float]] = field(default_factory=list)  # at, node, server_time
    attempts: list[float] = field(default_factory=list)  # reconnects, after their backoff
    anomalies: Counter[str] = field(default_factory=Counter)  # gap, duplicate, sync-required…
    retries: int = 0
    seq: Iterator[int] = field(default_factory=itertools.count)
    releases: list[Release] | None = None  # a watcher records every lock-released here

    @property
    def client_id(self) -> str:
        return f"tab-{self.n}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, "X-Client-Id": self.client_id}

    def apply(self, frame: Frame) -> None:
        data: dict[str, Any] = frame.data if isinstance(frame.data, dict) else {}
        if frame.event == "ready":
            assert frame.id is not None
            if int(frame.id) > self.last_id:
                self.anomalies["gap"] += 1  # the server promised a replay up to here
            self.failures = 0
            self.heartbeat_s = data["heartbeat_ms"] / 1000
            self.locks = lock_map(data["locks"])
            self.readies.append((time.monotonic(), self.node, data["server_time"]))
        elif frame.event == "case-updated":
            assert frame.id is not None
            self._update(int(frame.id), data)
        elif frame.event in ("lock-acquired", "lock-renewed"):
            lock = data["lock"]
            self.locks[lock["case_id"], lock["field"]] = holder(lock)
        elif frame.event == "lock-released":
            self.locks.pop((data["case_id"], data["field"]), None)
            if self.releases is not None:
                key = (data["case_id"], data["field"])
                self.releases.append((time.monotonic(), key, data["reason"]))
        elif frame.event == "state":
            self.locks = lock_map(data["locks"])
        elif frame.event == "goodbye":
            self.retry_after = data["retry_ms"] / 1000
        elif frame.event not in EPHEMERAL_NEWS:
            self.anomalies[frame.event] += 1  # sync-required, or a case created or deleted

    def _update(self, event_id: int, data: dict[str, Any]) -> None:
        if event_id <= self.last_id:
            self.anomalies["duplicate"] += 1  # applied at most once, as the browser does
            return
        if event_id != self.last_id + 1:
            self.anomalies["gap"] += 1
        self.last_id = event_id
        self.view[data["case_id"]].update(data["changes"], version=data["version"])


async def follow(tab: Tab, ports: Sequence[int], branch: int) -> None:
    """connection.js's loop; runs until cancelled."""
    while True:
        stream = await _open(tab, ports, branch)
        if stream is not None:
            try:
                await _read(tab, stream)
            finally:
                await stream.close()
        tab.failures += 1
        delay, tab.retry_after = tab.retry_after, None
        await asyncio.sleep(backoff(tab.failures - 1, tab.rng) if delay is None else delay)
        tab.attempts.append(time.monotonic())


async def _open(tab: Tab, ports: Sequence[int], branch: int) -> RawStream | None:
    query = f"client_id={tab.client_id}&last_event_id={tab.last_id}"
    for node in (tab.home, 1 - tab.home):
        stream = RawStream(ports[node], f"/api/branches/{branch}/events?{query}", tab.cookie)
        try:
            await stream.open(timeout=15)
        except (OSError, EOFError):
            await stream.close()
            continue
        if stream.status == 200:
            tab.node = node
            return stream
        await stream.close()
        return None  # the node answered, just not with a stream (503, 429): back off
    return None


async def _read(tab: Tab, stream: RawStream) -> None:
    while True:
        watchdog = 2 * tab.heartbeat_s + WATCHDOG_SLACK_MS / 1000
        try:
            frames = await stream.read_some(watchdog)
        except (OSError, EOFError):  # reset, or the watchdog's TimeoutError
            return
        if not frames:
            return
        for frame in frames:
            tab.apply(frame)
        stream.frames.clear()


async def request(
    tab: Tab, urls: Sequence[str], method: str, path: str, **kwargs: Any
) -> httpx.Response | None:
    """The saver's way; None when it is still unanswered after four tries (in doubt)."""
    for attempt in range(4):
        for node in (tab.home, 1 - tab.home):
            try:
                answer = await tab.http.request(method, urls[node] + path, **kwargs)
            except httpx.ConnectError:
                continue
            except httpx.HTTPError:
                break  # sent but unanswered: it may have been applied
            if answer.status_code < 500:
                return answer
            break
        tab.retries += 1
        await asyncio.sleep(backoff(attempt, tab.rng))
    return None
