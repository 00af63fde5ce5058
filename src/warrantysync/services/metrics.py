"""Prometheus metrics, one private registry per app, or one set for a group of workers.

No module-level collectors: tests build many apps in one process, and the
global registry would refuse the second set of names. ``GET /metrics``
answers ``render()`` with ``CONTENT_TYPE``.

With ``warrantysync serve --workers N`` the supervisor points
``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory before the workers start
(``warrantysync.server``), so prometheus-client keeps every value in files
there and any worker's scrape reads them all (its multiprocess mode).
Counters and histograms add up over every worker that ever ran; each gauge
says how it combines (``multiprocess_mode``); the task count, a function
gauge in one process, is sampled every ``TASKS_SAMPLE_EVERY`` s instead,
one series per worker (label ``pid``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST

_SAVE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WRITER_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
_GC_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
TASKS_SAMPLE_EVERY = 5.0


def shared_dir() -> str | None:
    """Where a group of workers keeps its metrics, or None for one process alone."""
    return os.environ.get(MULTIPROC_DIR) or None


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.shared_dir = shared_dir()
        r = self.registry
        self.streams_open = Gauge(
            "warrantysync_streams_open",
            "Event streams open on this process (on all live workers of a group)",
            registry=r,
            multiprocess_mode="livesum",
        )
        # A number that keeps growing while traffic is steady is a task leak
        # (the soak test watches it). Counted when scraped in one process.
        self.asyncio_tasks = Gauge(
            "warrantysync_asyncio_tasks",
            "asyncio tasks alive in this process",
            registry=r,
            multiprocess_mode="liveall",
        )
        if self.shared_dir is None:
            self.asyncio_tasks.set_function(_task_count)
        self.events_published = Counter(
            "warrantysync_events_published",
            "Events handed to subscribers, by event name",
            ["kind"],
            registry=r,
        )
        self.events_dropped = Counter(
            "warrantysync_events_dropped",
            "Events not delivered because a subscriber buffer was full",
            registry=r,
        )
        self.slow_subscriber_disconnects = Counter(
            "warrantysync_slow_subscriber_disconnects",
            "Streams closed because they could not keep up",
            registry=r,
        )
        # A lock granted by a worker that died is released by another: the
        # sum includes workers that are gone.
        self.locks_held = Gauge(
            "warrantysync_locks_held",
            "Field locks granted minus released by this process (sum over processes)",
            registry=r,
            multiprocess_mode="sum",
        )
        self.lock_conflicts = Counter(
            "warrantysync_lock_conflicts",
            "Lock requests and writes refused because another owner holds the lock",
            registry=r,
        )
        self.lock_requests = Counter(
            "warrantysync_lock_requests",
            "Requests for a locked field, by how they ended"
            " (released, kept, timeout, lock_gone, withdrawn)",
            ["answer"],
            registry=r,
        )
        self.lock_refusals = Counter(
            "warrantysync_lock_refusals",
            "Lock requests refused by a limit, by reason"
            " (too_many_locks, lock_barred, stream_required)",
            ["reason"],
            registry=r,
        )
        self.save_latency = Histogram(
            "warrantysync_save_latency_seconds",
            "Time to validate and commit a case change",
            buckets=_SAVE_BUCKETS,
            registry=r,
        )
        # SQLite group commit (storage/groupcommit.py): writers per COMMIT.
        self.sqlite_commit_writers = Histogram(
            "warrantysync_sqlite_commit_writers",
            "Write transactions of requests made durable by one SQLite COMMIT (group commit)",
            buckets=_WRITER_BUCKETS,
            registry=r,
        )
        self.replays = Counter(
            "warrantysync_replays",
            "Stream resumes by where they were served from (memory, database, refused)",
            ["source"],
            registry=r,
        )
        # Every decision on a resuming stream (services/broker/replay.py), as
        # Baserow's replay counts its outcomes; the metric above stays as it was.
        self.resumes = Counter(
            "warrantysync_resumes",
            "Stream openings by how their catch-up was decided (fresh, current, memory,"
            " database, sync_required, overloaded, deadline_exceeded, unavailable, cancelled)",
            ["outcome"],
            registry=r,
        )
        self.replays_waiting = Gauge(
            "warrantysync_replays_waiting",
            "Stream catch-ups waiting for a database read slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.deliveries = Counter(
            "warrantysync_deliveries",
            "Events handed to streams (heartbeats not counted), by path: written straight"
            " to the socket (direct) or queued for the stream's own task (queued)",
            ["path"],
            registry=r,
        )
        # Which fast paths run (docs/performance.md, "Transport fast paths"): the
        # series with value 1 is the current one.
        self.transport = Gauge(
            "warrantysync_transport_info",
            "The transport paths in use: stream (direct|asgi|none before the first"
            " stream), sqlite (one_trip|stock|none)",
            ["stream", "sqlite"],
            registry=r,
            multiprocess_mode="liveall",
        )
        self._transport = ("none", "none")
        self.transport.labels(stream="none", sqlite="none").set(1)
        self.rate_limited = Counter(
            "warrantysync_rate_limited",
            "Requests refused by a rate limit, by scope",
            ["scope"],
            registry=r,
        )
        self.cases_purged = Counter(
            "warrantysync_cases_purged",
            "Deleted cases removed for good after TRASH_RETENTION_DAYS",
            registry=r,
        )
        self.trash_purges = Counter(
            "warrantysync_trash_purges",
            "Purge rounds by outcome (ran: this node held the lease; skipped: another did)",
            ["outcome"],
            registry=r,
        )

        # Every stream is a few hundred objects the cyclic collector walks: with
        # 10,000 open, one full (generation 2) collection stops the process for
        # ~0.5 s on a small server (docs/performance.md).
        self.gc_pause = Histogram(
            "warrantysync_gc_pause_seconds",
            "Pauses of Python's cyclic garbage collector, by generation",
            ["generation"],
            buckets=_GC_BUCKETS,
            registry=r,
        )

    def set_transport(self, *, stream: str | None = None, sqlite: str | None = None) -> bool:
        """Mark the paths now in use in ``warrantysync_transport_info``; True if that changed."""
        old = self._transport
        new = (stream or old[0], sqlite or old[1])
        if new == old:
            return False
        self.transport.labels(stream=old[0], sqlite=old[1]).set(0)
        self.transport.labels(stream=new[0], sqlite=new[1]).set(1)
        self._transport = new
        return True

    def watch_gc(self) -> Callable[[], None]:
        """Time every collection into ``gc_pause``; returns the undo."""
        started = 0.0

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            nonlocal started
            if phase == "start":
                started = time.perf_counter()
            else:
                generation = str(info["generation"])
                self.gc_pause.labels(generation=generation).observe(time.perf_counter() - started)

        gc.callbacks.append(on_gc)
        return lambda: gc.callbacks.remove(on_gc)

    def sample_tasks(self) -> None:
        """Write this worker's task count for the group's scrapes (no-op in one process)."""
        if self.shared_dir is not None:
            self.asyncio_tasks.set(_task_count())

    def render(self) -> bytes:
        if self.shared_dir is None:
            return generate_latest(self.registry)
        group = CollectorRegistry()
        multiprocess.MultiProcessCollector(group, path=self.shared_dir)  # type: ignore[no-untyped-call]
        return generate_latest(group)


def _task_count() -> float:
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the event loop
        return 0.0
