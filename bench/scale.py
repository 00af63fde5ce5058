"""How many streams one process holds on time, idle bytes, and two nodes behind Redis."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT, log, rss_kib
from fanout import Sequence, latency, wait_idle
from fleet import Fleet
from targets import WarrantySync

# Seconds after its server_time a heartbeat still counts as on time: the
# browser's WATCHDOG_SLACK_MS (static/js/connection.js), the slack its watchdog
# grants beyond two intervals. Each step also records the latest one seen.
LATE_LIMIT = 5.0


def heartbeats(target: WarrantySync, fleet: Fleet, levels: list[int]) -> dict[str, Any]:
    """Grow the process until a stream misses a heartbeat (or ``levels`` run out).

    At each level every stream must get a heartbeat in a window of one
    interval plus ``LATE_LIMIT``, within ``LATE_LIMIT`` of its ``server_time``, and
    no stream may be lost. The first window also gives the idle bytes per
    stream: nothing but heartbeats flows then.
    """
    interval = target.heartbeat
    steps: list[dict[str, Any]] = []
    idle: dict[str, Any] = {}
    held = 0
    for level in levels:
        opened = fleet.open_to(level)
        wait_idle(target.pid)
        fleet.reset()
        window = interval + LATE_LIMIT
        time.sleep(window)
        seen = fleet.summary()
        on_time = (
            seen["alive"] >= level and seen["min_beats"] >= 1 and seen["max_late"] <= LATE_LIMIT
        )
        step = {
            "streams": seen["alive"],
            "wanted": level,
            "failed_opens": opened["failed"],
            "min_beats": seen["min_beats"],
            "max_late_s": seen["max_late"],
            "on_time": on_time,
            "rss_kib": rss_kib(target.pid),
        }
        steps.append(step)
        log(f"heartbeats @{seen['alive']}: on time {on_time}, late {seen['max_late']:.2f}s")
        if not idle and seen["beats"]:
            per_beat = seen["bytes"] / seen["beats"]
            idle = {
                "streams": seen["alive"],
                "window_s": window,
                "interval_s": interval,
                "bytes_per_heartbeat": per_beat,
                "measured_bytes_per_s": seen["bytes"] / seen["alive"] / window,
                "bytes_per_s_at_30s": per_beat / 30.0,
            }
        if not on_time:
            break
        held = seen["alive"]
    return {"max_streams_on_time": held, "steps": steps, "idle": idle, "limit": levels[-1]}


def cluster(logs: Path, viewers: int, edits: int) -> dict[str, Any]:
    """Two nodes on PostgreSQL + Redis; viewers split evenly; edits through node A."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from servers import PostgresServer, RedisServer, available  # type: ignore[import-not-found]
    except ImportError as exc:
        return {"skipped": f"tests/servers.py not importable: {exc}"}
    for kind in ("redis", "postgresql"):
        reason = available(kind)
        if reason is not None:
            return {"skipped": reason}
    with RedisServer() as redis, PostgresServer() as pg:
        node_a = WarrantySync(logs, database_url=pg.url, redis_url=redis.url, suffix="-node-a")
        node_b = WarrantySync(
            logs, database_url=pg.url, redis_url=redis.url, setup=False, suffix="-node-b"
        )
        fleets: list[Fleet] = []
        try:
            node_a.start()
            node_b.token, node_b.case_id = node_a.token, node_a.case_id
            node_b.start()
            for node in (node_a, node_b):
                fleet = Fleet(node.port, path=node.path, headers=node.headers)
                fleet.open_to(viewers // 2)
                fleets.append(fleet)
            for node in (node_a, node_b):
                wait_idle(node.pid)
            alive = sum(f.summary()["alive"] for f in fleets)
            result = latency(node_a, _Both(fleets), Sequence(), alive, edits)
            result.update({"viewers": alive, "nodes": 2})
            log(f"cluster @{alive}: p50 {result['p50_ms']:.1f} p99 {result['p99_ms']:.1f} ms")
            return result
        except Exception as exc:  # the Redis backends are young: report, do not abort the run
            log(f"cluster run failed: {exc!r}")
            return {"error": repr(exc)}
        finally:
            for fleet in fleets:
                fleet.stop()
            node_b.stop()
            node_a.stop()


class _Both(Fleet):
    """Two fleets answering as one (for ``fanout.latency``)."""

    def __init__(self, fleets: list[Fleet]) -> None:
        self.fleets = fleets

    def reset(self) -> None:
        for fleet in self.fleets:
            fleet.reset()

    def summary(self) -> dict[str, Any]:
        parts = [f.summary() for f in self.fleets]
        return {key: sum(p[key] for p in parts) for key in ("alive", "deliveries", "bytes")}

    def latencies(self, sends: dict[int, float]) -> tuple[list[float], int]:
        values: list[float] = []
        missing = 0
        for fleet in self.fleets:
            part, lost = fleet.latencies(sends)
            values += part
            missing += lost
        return values, missing
