"""The ASGI application: ``create_app(settings)`` builds everything in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .config import Settings
from .container import Services
from .errors import Unavailable
from .logs import configure_logging
from .services.accounts import Accounts
from .services.broker import Broker, make_broker_backend
from .services.cases import CaseService
from .services.idempotency import sweep as sweep_idempotency
from .services.live import live_state
from .services.lockrequests import LockRequests, make_lock_request_backend
from .services.locks import LockManager, locks_seen_by, make_lock_backend
from .services.metrics import TASKS_SAMPLE_EVERY, Metrics
from .services.presence import Presence, make_presence_backend
from .services.ratelimit import RateLimits
from .services.rowpresence import RowPresence, make_row_presence_backend
from .services.streams import StreamConfig
from .services.tabs import connection_of, release_connection
from .services.trash import Trash
from .storage.db import Database
from .web import errors as web_errors
from .web import openapi as web_openapi
from .web.forwarded import ForwardedHeaders
from .web.lane import App
from .web.requestid import TrustedPeers
from .web.routes import auth, casecsv, cases, health, locks, pages, trash, where
from .web.security import EdgeHeaders, PerIpLimit
from .web.version import client_version

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "web" / "static"
SWEEP_EVERY = 3600.0


async def build_services(settings: Settings) -> Services:
    db = Database(
        settings.database_url,
        timeout=settings.database_timeout,
        check_durability=True,
        one_trip="one_trip" in settings.fast_paths,
        group_commit=settings.group_commit,
    )
    metrics = Metrics()
    if db.group is not None:
        db.group.on_commit = metrics.sqlite_commit_writers.observe
    broker = Broker(
        make_broker_backend(settings.redis_url),
        db=db,
        metrics=metrics,
        replay_window=settings.replay_window,
    )

    async def attending(branch_id: int, user_id: int, client_id: str) -> bool:
        # A tab sharing its browser's stream attends while that stream does.
        for stream_id in dict.fromkeys((client_id, connection_of(client_id))):
            if await presence.attending(branch_id=branch_id, user_id=user_id, client_id=stream_id):
                return True
        return False

    lock_manager = LockManager(
        make_lock_backend(settings.redis_url),
        ttl=settings.lock_ttl,
        publish=broker.publish_ephemeral,
        metrics=metrics,
        max_per_user=settings.max_locks_per_user,
        attending=attending,
        renew_grace=settings.disconnect_grace,
        force_cooldown=settings.forced_release_cooldown,
    )

    rows = RowPresence(
        make_row_presence_backend(settings.redis_url), publish=broker.publish_ephemeral
    )

    async def client_gone(branch_id: int, user_id: int, client_id: str) -> None:
        await rows.forget_connection(branch_id=branch_id, user_id=user_id, connection_id=client_id)
        await release_connection(
            lock_manager,
            branch_id=branch_id,
            user_id=user_id,
            connection_id=client_id,
            reason="disconnected",
        )

    presence = Presence(
        make_presence_backend(settings.redis_url),
        publish=broker.publish_ephemeral,
        grace=settings.disconnect_grace,
        on_client_gone=client_gone,
    )

    async def state_of(branch_id: int) -> dict[str, Any]:
        # After a re-subscription Redis answers again: do not wait for the upkeep to notice.
        await presence.probe()
        return await live_state(
            locks=lock_manager, presence=presence, branch_id=branch_id, rows=rows
        )

    broker.state_provider = state_of
    broker.state_view = lambda state, user_id: {
        **state,
        "locks": locks_seen_by(state["locks"], user_id),
    }
    return Services(
        settings=settings,
        db=db,
        metrics=metrics,
        accounts=Accounts(db, session_ttl=settings.session_ttl, secret_key=settings.secret_key),
        cases=CaseService(
            db, publish=broker.publish, replay_window=settings.replay_window, locks=lock_manager
        ),
        broker=broker,
        locks=lock_manager,
        presence=presence,
        stream_config=StreamConfig(
            heartbeat_ms=int(settings.heartbeat_interval * 1000),
            lock_ttl_ms=int(settings.lock_ttl * 1000),
            max_frames=settings.stream_buffer,
            max_streams=settings.max_streams_per_user,
            version=client_version(),
        ),
        limits=RateLimits(
            storage_url=settings.redis_url,
            writes=settings.rate_limit_writes,
            locks=settings.rate_limit_locks,
            login=settings.rate_limit_login,
            ip=settings.rate_limit_ip,
            lock_requests=settings.rate_limit_lock_requests,
            metrics=metrics,
        ),
        trash=Trash(
            db,
            retention_days=settings.trash_retention_days,
            purge_interval=settings.trash_purge_interval,
            metrics=metrics,
        ),
        lock_requests=LockRequests(
            make_lock_request_backend(settings.redis_url),
            locks=lock_manager,
            publish=broker.publish_ephemeral,
            timeout=settings.lock_request_timeout,
            attending=attending,
            metrics=metrics,
        ),
        rows=rows,
    )


def announce_fast_paths(services: Services) -> None:
    """Say which transport paths run (docs/performance.md, "Transport fast paths").

    The stream's path is known for sure only once a stream is served: the
    response logs and counts it then (``web/sse.py``).
    """
    db, settings = services.db, services.settings
    services.metrics.set_transport(sqlite=db.sqlite_path)
    if db.sqlite_path == "one_trip":
        log.info("SQLite: one driver trip per statement, a write's inline (storage/sqlite.py)")
    elif db.sqlite_path == "stock":
        reason = "turned off" if "one_trip" not in settings.fast_paths else "unsupported here"
        log.info("SQLite: the stock aiosqlite adapter (one-trip cursor %s)", reason)
    if db.dialect == "sqlite":
        # docs/performance.md, "Group commit".
        if db.group is not None:
            log.info("SQLite: group commit on (concurrent writers share one COMMIT)")
        else:
            log.info("SQLite: group commit off (a transaction and COMMIT per writer)")
    if "direct" in settings.fast_paths:
        log.info("event streams: direct writes where uvicorn's httptools protocol serves them")
    else:
        log.info("event streams: plain ASGI sends (direct writes turned off)")


async def _every(period: float, work: Callable[[], Awaitable[object]], name: str) -> None:
    """Run ``work`` every ``period`` seconds; a failure is logged, never fatal."""
    while True:
        await asyncio.sleep(period)
        try:
            await work()
        except Exception:
            log.exception("periodic task %s failed", name)


async def _sample_metrics(services: Services) -> None:
    """Keep this worker's sampled gauges fresh for the group's scrapes."""
    while True:
        services.metrics.sample_tasks()
        await asyncio.sleep(TASKS_SAMPLE_EVERY)


async def revalidate_streams(services: Services) -> None:
    """Close the open streams whose session, user or membership is gone."""
    subscribers = services.broker.subscribers()
    if not subscribers:
        return
    try:
        allowed = await services.accounts.live_access(
            keys={sub.principal_key for sub in subscribers},
            branch_ids={sub.branch_id for sub in subscribers},
        )
    except Unavailable:
        # The database is away (already logged): the streams stay open on
        # their heartbeats, and the next round checks them again.
        return
    for sub in subscribers:
        if (sub.principal_key, sub.user_id, sub.branch_id) not in allowed:
            services.broker.close(sub, "revoked")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await build_services(settings)
        app.state.services = services
        announce_fast_paths(services)
        unwatch_gc = services.metrics.watch_gc()
        await services.broker.start()
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(services.locks.run(stop), name="lock-expiry"),
            asyncio.create_task(services.lock_requests.run(stop), name="lock-request-timeout"),
            # Presence upkeep: with Redis, renews this node's lease and takes over
            # the streams of nodes whose lease lapsed; idle in memory
            # (docs/deployment.md, "What happens when something fails").
            asyncio.create_task(services.presence.run(stop), name="presence-upkeep"),
            asyncio.create_task(
                _every(settings.heartbeat_interval, services.broker.heartbeat, "heartbeat"),
                name="heartbeat",
            ),
            # A timer of its own: a slow or absent database delays the
            # credential checks (a revoked session's stream closes within a
            # heartbeat once it answers), never the heartbeats themselves.
            asyncio.create_task(
                _every(
                    settings.heartbeat_interval,
                    lambda: revalidate_streams(services),
                    "stream-revalidation",
                ),
                name="stream-revalidation",
            ),
            asyncio.create_task(
                _every(SWEEP_EVERY, lambda: sweep_idempotency(services.db), "idempotency-sweep"),
                name="idempotency-sweep",
            ),
            # Every node runs it; a lease in the database lets one purge per round.
            asyncio.create_task(services.trash.run(stop), name="trash-purge"),
        ]
        if services.metrics.shared_dir is not None:
            tasks.append(asyncio.create_task(_sample_metrics(services), name="metrics-sample"))
        try:
            yield
        finally:
            stop.set()
            services.broker.begin_shutdown()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.presence.close()
            await services.broker.stop()
            await services.lock_requests.close()
            await services.rows.close()
            await services.locks.close()
            await services.limits.close()
            await services.db.dispose()
            unwatch_gc()

    app = App(
        title="warrantysync",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    app.state.settings = settings
    app.state.trusted_peers = TrustedPeers(settings.trusted_proxies)
    web_errors.install(app)
    for module in (auth, cases, casecsv, trash, locks, where, health, pages):
        app.include_router(module.router)
    web_openapi.install(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # The last added runs first: the headers also go on a per-IP 429.
    app.add_middleware(PerIpLimit)
    app.add_middleware(web_errors.LastResort)
    app.add_middleware(EdgeHeaders, session_ttl=settings.session_ttl)
    # First of all, the stream lane included: the limit counts, and the headers
    # and Origin check see, the browser's address, scheme and host, not the proxy's.
    app.front = ForwardedHeaders(
        app.dispatch,
        trusted_proxies=settings.trusted_proxies,
        public_url=settings.public_host,
    )
    return app


def begin_shutdown(app: FastAPI) -> int:
    """Called on SIGTERM/SIGINT before uvicorn waits for connections to close."""
    services: Services | None = getattr(app.state, "services", None)
    if services is None:
        return 0
    return services.broker.begin_shutdown()


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory`` (several workers, --reload)."""
    settings = Settings()
    # Under `warrantysync serve` uvicorn has applied the same configuration already.
    configure_logging(settings.log_format)
    return create_app(settings)
