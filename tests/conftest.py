"""Shared fixtures.

``servers`` is tests/servers.py: pytest's default (prepend) import mode puts
this directory on sys.path because tests/ is not a package.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from factories import World, seed_world, seeded
from live import LiveServer
from nginx import NginxServer
from servers import Kind, MariaDBServer, PostgresServer, RedisServer, available
from warrantysync import Settings, create_app
from warrantysync.container import Services
from warrantysync.storage.migrate import upgrade

# --- real servers (build/infra) ---


def _require(kind: Kind) -> None:
    reason = available(kind)
    if reason is None:
        return
    if os.environ.get("CI"):
        # `make test` as root installs every server; a skip in CI would be a silent hole.
        pytest.fail(f"{reason} -- CI must run every backend test")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the whole run. Tests share it: use own keys or FLUSHDB."""
    _require("redis")
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One private PostgreSQL; ``create_database(name)`` gives a test a fresh database."""
    _require("postgresql")
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """One private MariaDB; ``create_database(name)`` gives a test a fresh database."""
    _require("mysql")
    with MariaDBServer() as server:
        yield server


@pytest.fixture
def nginx_factory() -> Iterator[Callable[[LiveServer], NginxServer]]:
    """``start(server)``: Debian's nginx with the documented config in front of ``server``."""
    _require("nginx")
    started: list[NginxServer] = []

    def start(server: LiveServer) -> NginxServer:
        nginx = NginxServer(upstream=f"127.0.0.1:{server.port}")
        started.append(nginx)
        return nginx.start()

    yield start
    for nginx in started:
        nginx.stop()


DURABLE_PASSWORD = "pg-durable-secret"


@pytest.fixture(scope="session")
def durable_postgres() -> Iterator[PostgresServer]:
    """A second PostgreSQL that tests may stop, restart and freeze.

    It runs with PostgreSQL's durable defaults (fsync, synchronous commits)
    and wants ``DURABLE_PASSWORD`` over TCP, so wrong credentials are refused.
    """
    _require("postgresql")
    with PostgresServer(password=DURABLE_PASSWORD, durable=True) as server:
        yield server


@pytest.fixture(scope="session")
def spare_mariadb() -> Iterator[MariaDBServer]:
    """A second MariaDB that tests may stop and restart."""
    _require("mysql")
    with MariaDBServer() as server:
        yield server


# --- app fixtures (lead) ---


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied per test: migrating once saves seconds."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture
def db_url(tmp_path: Path, migrated_template: Path) -> str:
    target = tmp_path / "test.db"
    shutil.copy(migrated_template, target)
    return f"sqlite+aiosqlite:///{target}"


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "secret_key": "test-secret-key",
        "rate_limit_writes": "off",
        "rate_limit_locks": "off",
        "rate_limit_login": "off",
        "rate_limit_ip": "off",
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
async def app_services(settings: Settings) -> AsyncIterator[tuple[object, Services]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app, app.state.services


@pytest.fixture
async def services(app_services: tuple[object, Services]) -> Services:
    return app_services[1]


@pytest.fixture
async def world(services: Services) -> World:
    return await seed_world(services.db)


@pytest.fixture
async def client(app_services: tuple[object, Services]) -> AsyncIterator[httpx.AsyncClient]:
    app = app_services[0]
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def login(http: httpx.AsyncClient, email: str, password: str = "pw-secret") -> dict[str, str]:
    """Log ``http`` in; returns the headers a cookie-authenticated write needs."""
    response = await http.post("/api/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    return {"X-CSRF-Token": response.json()["csrf_token"]}


__all__ = ["login", "make_settings"]


# --- a real server in a subprocess -------------------------------------------


def seeded_sqlite(tmp_path: Path, template: Path) -> tuple[str, World]:
    target = tmp_path / "live.db"
    shutil.copy(template, target)
    url = f"sqlite+aiosqlite:///{target}"
    return url, seeded(url)


LIVE_ENV = {
    "WARRANTYSYNC_SECRET_KEY": "live-test-secret",
    "WARRANTYSYNC_RATE_LIMIT_WRITES": "off",
    "WARRANTYSYNC_RATE_LIMIT_LOCKS": "off",
    "WARRANTYSYNC_RATE_LIMIT_LOGIN": "off",
    "WARRANTYSYNC_RATE_LIMIT_IP": "off",
    "WARRANTYSYNC_HEARTBEAT_INTERVAL": "1",
    "WARRANTYSYNC_LOCK_TTL": "3",
    "WARRANTYSYNC_DISCONNECT_GRACE": "0.5",
    "WARRANTYSYNC_SHUTDOWN_GRACE": "3",
}

LiveFactory = Callable[..., tuple[LiveServer, World]]


@pytest.fixture
def live_factory(tmp_path: Path, migrated_template: Path) -> Iterator[LiveFactory]:
    """Start servers on one seeded SQLite database; ``env`` overrides settings."""
    started: list[LiveServer] = []
    url, world = seeded_sqlite(tmp_path, migrated_template)

    def start(**env: str) -> tuple[LiveServer, World]:
        merged = {**LIVE_ENV, "WARRANTYSYNC_DATABASE_URL": url}
        merged.update({f"WARRANTYSYNC_{k.upper()}": v for k, v in env.items()})
        server = LiveServer(env=merged, log_path=tmp_path / f"server{len(started)}.log")
        started.append(server)
        return server.start(), world

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def live(live_factory: LiveFactory) -> tuple[LiveServer, World]:
    return live_factory()
