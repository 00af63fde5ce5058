"""Helpers for the security suite: a live server per module, logged-in clients.

Every test here talks to a real ``warrantysync serve`` (uvicorn, httptools,
proxy headers) over loopback, as an attacker would; nothing is mocked.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from conftest import LIVE_ENV, seeded_sqlite
from factories import PASSWORD, World
from live import LiveServer
from warrantysync.services import admin
from warrantysync.storage.db import Database

SESSION_COOKIE = "warrantysync_session"
EVIL = "https://evil.example"


@contextlib.contextmanager
def live_server(
    tmp: Path, template: Path, nofile: tuple[int, int] | None = None, **env: str
) -> Iterator[tuple[LiveServer, World, str]]:
    """A server on a freshly seeded SQLite copy; ``env`` overrides settings by name,
    ``nofile`` sets the process's (soft, hard) descriptor limit."""
    url, world = seeded_sqlite(tmp, template)
    merged = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}
    merged.update({f"WARRANTYSYNC_{k.upper()}": v for k, v in env.items()})
    server = LiveServer(env=merged, log_path=tmp / "server.log", nofile=nofile).start()
    try:
        yield server, world, url
    finally:
        server.kill()


def run_admin(url: str, action: str, **kwargs: Any) -> Any:
    """Call ``warrantysync.services.admin.<action>`` on the server's database."""

    async def go() -> Any:
        db = Database(url)
        try:
            return await getattr(admin, action)(db, **kwargs)
        finally:
            await db.dispose()

    return asyncio.run(go())


async def run_admin_async(url: str, action: str, **kwargs: Any) -> Any:
    db = Database(url)
    try:
        return await getattr(admin, action)(db, **kwargs)
    finally:
        await db.dispose()


@dataclass
class Caller:
    """A logged-in browser: its cookie jar (inside ``http``) and CSRF token."""

    http: httpx.Client
    csrf: str
    token: str  # the raw session cookie value

    def headers(self, client_id: str = "sec-tab", **extra: str) -> dict[str, str]:
        return {"X-CSRF-Token": self.csrf, "X-Client-Id": client_id, **extra}


def sign_in(base_url: str, email: str, password: str = PASSWORD) -> Caller:
    http = httpx.Client(base_url=base_url, timeout=15)
    response = http.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return Caller(http, response.json()["csrf_token"], http.cookies[SESSION_COOKIE])


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) >= {"error", "message"}, body
    if code is not None:
        assert body["error"] == code, body
    return body
