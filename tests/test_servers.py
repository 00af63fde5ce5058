"""servers.py: each real server starts, answers the client library the app uses, and
behaves as the fault tests need (Redis restart with or without its data, PostgreSQL
paused and resumed)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from servers import MariaDBServer, PostgresServer, RedisServer, free_port


async def _scalar(url: str, sql: str, **engine_kwargs: object) -> object:
    engine = create_async_engine(url, **engine_kwargs)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar_one()
    finally:
        await engine.dispose()


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --- Redis ---


@pytest.fixture(scope="module")
def private_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """Its own instance: restarting the shared one would wipe other tests' data."""
    with RedisServer() as server:
        yield server


@pytest.fixture
async def redis_client(private_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(private_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


async def _get_after_restart(client: aioredis.Redis, key: str) -> bytes | str | None:
    # redis-py (8.x) raises ConnectionError once for the pooled connection that the
    # restart closed, then reconnects; the app has to live with that too.
    with pytest.raises(aioredis.ConnectionError):
        await client.get(key)
    return await client.get(key)


@pytest.mark.redis
async def test_redis_answers(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await client.ping()
        await client.set("test_servers:greeting", "hello")
        assert await client.get("test_servers:greeting") == b"hello"
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_restart_wiping_data_loses_keys_and_keeps_port(
    private_redis: RedisServer, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("k", "v")
    port, pid = private_redis.port, private_redis.pid

    private_redis.restart(wipe_data=True)

    assert private_redis.port == port
    assert private_redis.pid != pid
    assert private_redis.url == f"redis://127.0.0.1:{port}/0"
    assert await _get_after_restart(redis_client, "k") is None


@pytest.mark.redis
async def test_redis_restart_keeping_data(
    private_redis: RedisServer, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("kept", "yes")

    private_redis.restart(wipe_data=False)

    assert await _get_after_restart(redis_client, "kept") == b"yes"


@pytest.mark.redis
def test_stop_ends_the_process_group_and_removes_the_directory(
    redis_server: RedisServer,
) -> None:
    server = RedisServer().start()
    pid, directory = server.pid, server.dir
    assert pid is not None

    server.stop()
    server.stop()  # idempotent

    assert server.pid is None
    assert not directory.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)


# --- PostgreSQL ---


@pytest.mark.postgresql
async def test_postgres_answers_asyncpg(postgres_server: PostgresServer) -> None:
    assert postgres_server.port not in (5432, 0)
    assert await _scalar(postgres_server.url, "SELECT current_database()") == "warrantysync"


@pytest.mark.postgresql
async def test_postgres_create_database(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database("test_servers_fresh")

    assert url.endswith("/test_servers_fresh")
    assert await _scalar(url, "SELECT count(*) FROM pg_class WHERE relname = 'nope'") == 0
    with pytest.raises(ValueError):
        postgres_server.create_database('x"; DROP DATABASE warrantysync; --')


def _process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


@pytest.mark.postgresql
async def test_postgres_pause_freezes_server_and_backends_until_resume(
    postgres_server: PostgresServer,
) -> None:
    engine = create_async_engine(postgres_server.url)
    try:
        async with engine.connect() as open_conn:
            backend_pid = (await open_conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()

            postgres_server.pause()
            try:
                # Backends setsid() themselves, so they must be stopped one by one too.
                assert _process_state(backend_pid) == "T"
                assert postgres_server.pid is not None
                assert _process_state(postgres_server.pid) == "T"
                with pytest.raises(TimeoutError):
                    await _scalar(postgres_server.url, "SELECT 1", connect_args={"timeout": 0.5})
            finally:
                postgres_server.resume()

            assert (await open_conn.execute(text("SELECT 2"))).scalar_one() == 2
    finally:
        await engine.dispose()
    assert await _scalar(postgres_server.url, "SELECT 3") == 3


# --- MariaDB ---


@pytest.mark.mysql
async def test_mariadb_answers_asyncmy(mariadb_server: MariaDBServer) -> None:
    assert mariadb_server.port not in (3306, 0)
    assert await _scalar(mariadb_server.url, "SELECT DATABASE()") == "warrantysync"
    assert await _scalar(mariadb_server.url, "SELECT @@character_set_database") == "utf8mb4"


@pytest.mark.mysql
async def test_mariadb_create_database(mariadb_server: MariaDBServer) -> None:
    url = mariadb_server.create_database("test_servers_fresh")

    assert await _scalar(url, "SELECT DATABASE()") == "test_servers_fresh"
    assert await _scalar(url, "SELECT @@character_set_database") == "utf8mb4"
