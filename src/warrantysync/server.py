"""Run the app under uvicorn, with a graceful goodbye to open streams.

SSE responses never finish on their own, so uvicorn's graceful shutdown
would sit out its whole timeout and then cut every stream. ``Server`` hooks
the exit signal instead: it first calls ``warrantysync.app.begin_shutdown(app)``
(every open stream sends ``goodbye`` with a jittered ``retry_ms`` and ends),
then lets uvicorn stop as usual; uvicorn's ``timeout_graceful_shutdown`` is
only the backstop.

The hook must run in every process that serves requests. With one process
that is the ``Server`` built here. With ``--workers N`` uvicorn's supervisor
builds a ``uvicorn.Server`` in each worker, so we hand it a ``Process``
subclass whose worker runs our ``Server``; with ``--reload`` the reloader runs
our ``Server.run`` directly. A worker builds its own app from the environment
(``warrantysync.app.app_from_env``): the supervisor pickles the server into a
fresh interpreter, and an app object cannot travel that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.util
import logging
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import ChangeReload, multiprocess

from . import fdlimit, httpguard
from .logs import configure_logging, logging_config

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

WORKER_START_TIMEOUT = 60  # seconds a new worker has to answer its supervisor

# The FastAPI app; typed loosely because uvicorn's ASGI protocols and
# Starlette's signatures do not line up for mypy.
App = Any


def _build_app_from_env() -> App:
    from .app import app_from_env

    return app_from_env()


class Server(uvicorn.Server):
    """``uvicorn.Server`` that tells the app to say goodbye before it stops."""

    def __init__(self, config: uvicorn.Config, app: App | None = None) -> None:
        super().__init__(config)
        self.app = app
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fd_watch = fdlimit.FdWatch(httpguard.close_idle)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        if self.app is None:
            # A worker or reloader child: this interpreter builds its own app.
            self.app = _build_app_from_env()
            self.config.app = self.app
            self.config.factory = False
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        fdlimit.raise_limit()  # in every serving process, before it accepts anyone
        await super().startup(sockets=sockets)
        freeze_startup_heap()

    async def on_tick(self, counter: int) -> bool:
        if counter % 10 == 0:  # uvicorn ticks every 0.1 s
            self.fd_watch.check(self.server_state.connections)
        return await super().on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Only on the first signal; a second SIGINT means "stop now".
        if not self.should_exit and self.app is not None and self._loop is not None:
            # We are inside a signal handler, interrupting arbitrary code on
            # the loop's thread: hand the work to the loop instead of doing it here.
            self._loop.call_soon_threadsafe(_begin_shutdown, self.app)
        super().handle_exit(sig, frame)


def freeze_startup_heap() -> int:
    """Exempt what startup built from every later full garbage collection.

    The app, its libraries and its settings (~120,000 objects) live as long
    as the process, yet each full collection walked them all: ~140 ms of a
    stopped event loop on a small server, on top of the open streams' share
    (docs/performance.md). Collected first, so no garbage is frozen with them.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _begin_shutdown(app: App) -> None:
    from .app import begin_shutdown

    begin_shutdown(app)


class WorkerProcess(multiprocess.Process):
    """A worker of uvicorn's supervisor that serves with our ``Server``."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = Server(self.config)
        return self._server

    def join(self) -> None:
        super().join()
        # Its live gauges (open streams, tasks) stop counting; counters stay.
        if self.pid is not None:
            from prometheus_client import multiprocess as shared_metrics

            shared_metrics.mark_process_dead(self.pid)  # type: ignore[no-untyped-call]


def connection_limits(settings: Settings) -> httpguard.Limits:
    return httpguard.Limits(
        max_header_bytes=settings.max_header_bytes,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        keep_alive_timeout=settings.keep_alive_timeout,
    )


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def run(settings: Settings, host: str, port: int, workers: int = 1, reload: bool = False) -> None:
    """Serve until a signal stops us. Refuses configurations that cannot work."""
    try:
        _refuse_what_cannot_work(settings, workers, reload)
    except click.ClickException as exc:
        if settings.log_format != "json":
            raise  # click's one "Error: …" line, for people
        # A log shipper reads every line as JSON, the reason for a refused start too.
        configure_logging(settings.log_format)
        log.error("%s", exc.message)
        raise SystemExit(1) from None
    _serve_with(settings, host, port, workers, reload)


def _refuse_what_cannot_work(settings: Settings, workers: int, reload: bool) -> None:
    if workers < 1:
        raise click.ClickException("--workers must be at least 1")
    if workers > 1 and settings.in_process:
        raise click.ClickException(
            f"--workers {workers} needs WARRANTYSYNC_REDIS_URL: without Redis every worker"
            " would keep its own locks, presence and live events, so users on different"
            " workers would not see each other. Set WARRANTYSYNC_REDIS_URL=redis://… or"
            " run one worker."
        )
    if workers > 1 and reload:
        raise click.ClickException("--reload runs a single worker; drop --workers")

    if settings.redis_url is not None:
        _check_redis(settings.redis_url)


def _serve_with(settings: Settings, host: str, port: int, workers: int, reload: bool) -> None:
    supervised = workers > 1 or reload
    # Children of a supervisor build their app themselves (see Server.serve).
    app = None if supervised else _create_app(settings)
    config = uvicorn.Config(
        "warrantysync.app:app_from_env" if app is None else app,
        factory=supervised,
        host=host,
        port=port,
        workers=workers,
        reload=reload,
        # Watch the package, not whatever directory we were started from.
        reload_dirs=[str(Path(__file__).parent)] if reload else None,
        # The app reads the forwarded headers itself (web/forwarded.py).
        proxy_headers=False,
        loop="uvloop" if _has("uvloop") else "auto",
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 2,
        # The supervisor kills a worker that has not answered its first ping
        # within this (uvicorn's default is 5 s). A worker answers from a
        # thread that starts once its imports are done, which on a busy host
        # (a deploy beside other services) takes longer than 5 s, and the
        # supervisor then kills and restarts workers for ever. A worker that
        # dies later is noticed at once whatever this says.
        timeout_worker_healthcheck=WORKER_START_TIMEOUT,
        lifespan="on",
        # uvicorn's own loggers write through ours too (every worker applies it).
        log_config=logging_config(settings.log_format),
    )
    httpguard.install(config, connection_limits(settings))
    if reload:
        server = Server(config)
        ChangeReload(config, target=server.run, sockets=[config.bind_socket()]).run()
    elif workers > 1:
        _run_workers(config)
    else:
        server = Server(config, app=app)
        with contextlib.suppress(KeyboardInterrupt):
            server.run()
        if not server.started:
            raise SystemExit(STARTUP_FAILURE)


def _check_redis(url: str) -> None:
    """Fail with one clear line, not a lifespan traceback, when Redis is unreachable."""
    from .services.redisconn import check_reachable

    problem = asyncio.run(check_reachable(url))
    if problem is not None:
        raise click.ClickException(
            f"{problem.rstrip('.')}. WARRANTYSYNC_REDIS_URL must point at a running Redis"
            " (or unset it to run one process without Redis)."
        )


def _create_app(settings: Settings) -> App:
    from .app import create_app

    return create_app(settings)


def _run_workers(config: uvicorn.Config) -> None:
    sock = config.bind_socket()
    # uvicorn's supervisor constructs workers through this module-level name;
    # the workers it starts are unpickled in fresh interpreters, where
    # WorkerProcess (importable from here) brings our Server along.
    original = multiprocess.Process
    multiprocess.Process = WorkerProcess  # type: ignore[misc]
    try:
        with shared_metrics_dir():
            multiprocess.Multiprocess(config, sockets=[sock]).run()
    finally:
        multiprocess.Process = original  # type: ignore[misc]


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[Path]:
    """A fresh ``PROMETHEUS_MULTIPROC_DIR`` for this run's workers, removed afterwards.

    Set before the first worker starts: prometheus-client picks its storage
    when a worker imports it. Fresh per run, as its docs require, so counters
    of an earlier run never add in; an outside value is replaced.
    """
    from .services.metrics import MULTIPROC_DIR

    path = Path(tempfile.mkdtemp(prefix="warrantysync-metrics-"))
    previous = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = previous
        shutil.rmtree(path, ignore_errors=True)


__all__ = ["Server", "WorkerProcess", "run"]
