"""100 people typing into warrantysync through the browser saver's debounce rule.

A faithful port of ``static/js/saver.js`` for one text field per user: each
keystroke updates the pending value and restarts the case's timer; the timer
(``DEBOUNCE_MS`` after the last keystroke) marks the case ready; one save per
case is in flight at a time and whatever was typed meanwhile goes in the next
one; blur flushes. Saves carry ``expected`` (the last confirmed value), the
field's lock token and an ``Idempotency-Key``, like the browser's. Each user
holds the lock on their field while typing, renewed every ``LOCK_RENEW_MS``.

Typing model: phrases of 2-5 words of 3-8 letters, 5 keystrokes per second
(a space is a keystroke), 1.5-4 s of thought between phrases.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

DEBOUNCE_MS = 1000
LOCK_RENEW_MS = 10_000
KEYS_PER_SECOND = 5.0
FIELD = "notes"
RETRIES = 4
RETRY_DELAY = 0.2


@dataclass
class Totals:
    keystrokes: int = 0
    patches: int = 0
    ok: int = 0
    refused: dict[int, int] = field(default_factory=dict)
    network_errors: int = 0


class Typist:
    """One user, one case, one field, one saver queue."""

    def __init__(self, http: httpx.AsyncClient, case_id: int, n: int, totals: Totals) -> None:
        self.http = http
        self.case_id = case_id
        self.client_id = f"typist-{n}"
        self.totals = totals
        self.value = ""  # what the screen shows
        self.confirmed = ""  # what the server last confirmed
        self.lock_token: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ready = False
        self.running: asyncio.Task[None] | None = None
        self.rng = random.Random(n)

    @property
    def headers(self) -> dict[str, str]:
        return {"X-Client-Id": self.client_id}

    async def lock(self) -> None:
        try:
            response = await self.http.put(
                f"/api/cases/{self.case_id}/locks/{FIELD}", headers=self.headers
            )
        except httpx.TransportError:
            self.totals.network_errors += 1
            return  # the next renewal tries again
        if response.status_code == 200:
            self.lock_token = response.json()["lock"]["token"]

    # -- saver.js -----------------------------------------------------------------

    def edit(self, value: str) -> None:
        self.value = value
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(DEBOUNCE_MS / 1000, self._fire)

    def _fire(self) -> None:
        self.timer = None
        self.ready = True
        self._kick()

    def _kick(self) -> None:
        if self.running is None and self.ready:
            self.running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while self.ready:
                self.ready = False
                if self.value != self.confirmed:
                    await self._send(self.value)
        finally:
            self.running = None

    async def _send(self, value: str) -> None:
        body: dict[str, Any] = {"changes": {FIELD: value}, "expected": {FIELD: self.confirmed}}
        if self.lock_token is not None:
            body["lock_tokens"] = {FIELD: self.lock_token}
        # Retries resend the same bytes under the same key, like the saver's.
        headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
        for attempt in range(RETRIES):
            self.totals.patches += 1
            try:
                response = await self.http.patch(
                    f"/api/cases/{self.case_id}", json=body, headers=headers
                )
                break
            except httpx.TransportError:
                # e.g. a keep-alive connection the server closed as we reused it
                self.totals.network_errors += 1
                await asyncio.sleep(RETRY_DELAY * (attempt + 1))
        else:
            return
        if response.status_code == 200:
            self.totals.ok += 1
            self.confirmed = value
        else:
            self.totals.refused[response.status_code] = (
                self.totals.refused.get(response.status_code, 0) + 1
            )

    async def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ready = True
        self._kick()
        if self.running is not None:
            await self.running

    # -- the person -----------------------------------------------------------------

    async def type_for(self, seconds: float) -> None:
        await self.lock()
        end = time.monotonic() + seconds
        renew = time.monotonic() + LOCK_RENEW_MS / 1000
        await asyncio.sleep(self.rng.uniform(0, 2))
        while time.monotonic() < end:
            for word in range(self.rng.randint(2, 5)):
                letters = self.rng.randint(3, 8) + (1 if word else 0)
                for _ in range(letters):
                    await asyncio.sleep(1 / KEYS_PER_SECOND)
                    self.totals.keystrokes += 1
                    self.edit(self.value + self.rng.choice("abcdefghij"))
                if time.monotonic() > renew:
                    await self.lock()
                    renew = time.monotonic() + LOCK_RENEW_MS / 1000
            await asyncio.sleep(self.rng.uniform(1.5, 4.0))
        await self.flush()
        with contextlib.suppress(httpx.TransportError):
            await self.http.delete(f"/api/cases/{self.case_id}/locks/{FIELD}", headers=self.headers)


async def simulate(base_url: str, token: str, case_ids: list[int], seconds: float) -> Totals:
    totals = Totals()
    limits = httpx.Limits(max_connections=len(case_ids), max_keepalive_connections=len(case_ids))
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {token}"},
        limits=limits,
        timeout=30,
    ) as http:
        typists = [Typist(http, case_id, n, totals) for n, case_id in enumerate(case_ids)]
        await asyncio.gather(*(t.type_for(seconds) for t in typists))
    return totals


def run(target: Any, users: int, seconds: float) -> dict[str, Any]:
    """``target`` is a started ``targets.WarrantySync``."""
    case_ids = [target.create_case(f"Typist {n}") for n in range(users)]
    head0 = target.head()
    started = time.monotonic()
    totals = asyncio.run(simulate(target.url, target.token, case_ids, seconds))
    elapsed = time.monotonic() - started
    writes = target.head() - head0  # one outbox event per committed save
    per_user_s = users * elapsed
    return {
        "users": users,
        "secs": elapsed,
        "keystrokes": totals.keystrokes,
        "patches": totals.patches,
        "saved": totals.ok,
        "refused": totals.refused,
        "network_errors": totals.network_errors,
        "db_writes": writes,
        "keystrokes_per_user_s": totals.keystrokes / per_user_s,
        "patches_per_user_s": totals.patches / per_user_s,
        "writes_per_user_s": writes / per_user_s,
        "reduction_pct": 100 * (1 - writes / max(1, totals.keystrokes)),
    }
