"""Several real ``warrantysync serve`` processes on one Redis and one PostgreSQL.

Shared by test_cluster.py, test_redis_restart.py and the cluster fault tests
(faults/test_fault_lost_update.py, faults/test_fault_node_kill.py). Every
node is a ``LiveServer`` (its own process group, stopped by its own pid); the
database is a fresh one on the session's private PostgreSQL, migrated and
seeded once per ``cluster()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from conftest import LIVE_ENV
from factories import World, seeded
from live import EventReader, LiveServer
from servers import PostgresServer, RedisServer
from warrantysync.storage.migrate import upgrade


def seeded_postgres(server: PostgresServer, name: str | None = None) -> tuple[str, World]:
    """A new migrated and seeded database (call outside any event loop)."""
    url = server.create_database(name or f"cluster_{secrets.token_hex(4)}")
    upgrade(url)
    return url, seeded(url)


@dataclass
class Cluster:
    """Nodes sharing ``database_url`` and ``redis_url``; ``start()`` adds one."""

    database_url: str
    redis_url: str
    world: World
    log_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[LiveServer] = field(default_factory=list)

    def start(self, **env: str) -> LiveServer:
        merged = {
            **LIVE_ENV,
            "WARRANTYSYNC_DATABASE_URL": self.database_url,
            "WARRANTYSYNC_REDIS_URL": self.redis_url,
            **self.env,
        }
        merged.update({f"WARRANTYSYNC_{k.upper()}": v for k, v in env.items()})
        node = LiveServer(env=merged, log_path=self.log_dir / f"node{len(self.nodes)}.log")
        self.nodes.append(node)
        return node.start()

    def replace(self, node: LiveServer) -> LiveServer:
        """SIGKILL ``node`` (its process group) and start a fresh one on its port and settings.

        What a supervisor does after a crash; the dead process stays in
        ``nodes`` (stopping it again is harmless), the new one is appended.
        """
        node.kill()
        fresh = LiveServer(env=node.env, log_path=node.log_path, port=node.port)
        self.nodes.append(fresh)
        return fresh.start()

    def stop_all(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def cluster(
    postgres: PostgresServer, redis: RedisServer, log_dir: Path, redis_db: int, **env: str
) -> Iterator[Cluster]:
    url, world = seeded_postgres(postgres)
    redis_url = redis.url.rsplit("/", 1)[0] + f"/{redis_db}"
    nodes = Cluster(
        url,
        redis_url,
        world,
        log_dir,
        env={f"WARRANTYSYNC_{k.upper()}": v for k, v in env.items()},
    )
    try:
        yield nodes
    finally:
        nodes.stop_all()


@contextlib.contextmanager
def two_nodes(
    postgres: PostgresServer, redis: RedisServer, log_dir: Path, redis_db: int, **env: str
) -> Iterator[Cluster]:
    """``cluster()`` with two nodes already started (call outside any event loop)."""
    with cluster(postgres, redis, log_dir, redis_db, **env) as nodes:
        nodes.start()
        nodes.start()
        yield nodes


@contextlib.asynccontextmanager
async def user(
    node: LiveServer, email: str
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """A logged-in client of ``node`` and the headers its writes need."""
    async with httpx.AsyncClient(base_url=node.url, timeout=10) as http:
        response = await http.post(
            "/api/auth/login", json={"email": email, "password": "pw-secret"}
        )
        assert response.status_code == 200, response.text
        yield http, {"X-CSRF-Token": response.json()["csrf_token"]}


def on(http: httpx.AsyncClient, node: LiveServer) -> httpx.AsyncClient:
    """The same user (same cookie) talking to another node."""
    return httpx.AsyncClient(base_url=node.url, cookies=http.cookies, timeout=10)


async def events_until(reader: EventReader, kind: str, *, timeout: float = 10.0) -> list[Any]:
    """Every event up to and including the first ``kind`` (heartbeats dropped)."""
    seen: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            item = await reader.queue.get()
            if item is None:
                raise EOFError(f"stream closed before {kind}; saw {seen}")
            if item.event == "heartbeat":
                continue
            seen.append(item)
            if item.event == kind:
                return seen
