"""One target, a growing audience: memory per idle stream, latency of one edit, saturation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import cpu_seconds, log, percentile, rss_kib
from fleet import Fleet
from targets import Target

IN_FLIGHT = 6  # saturation: events published but not yet delivered to everyone
BASELINE_PUBLISHES = 100  # the publish cost with nobody listening


@dataclass
class Level:
    viewers: int
    open_secs: float = 0.0
    rss_kib: int = 0
    rss_per_stream_kib: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    missing: int = 0
    latency_cpu_us: float = 0.0
    saturation: dict[str, float] = field(default_factory=dict)


def wait_idle(pid: int, *, quiet: float = 0.03, limit: float = 60.0) -> float:
    """Wait until the process burns < ``quiet`` CPU seconds per 0.5 s; returns the wait."""
    started = time.monotonic()
    last = cpu_seconds(pid)
    while time.monotonic() - started < limit:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        if now - last < quiet:
            break
        last = now
    return time.monotonic() - started


class Sequence:
    def __init__(self) -> None:
        self.value = 0

    def next(self) -> int:
        self.value += 1
        return self.value


def latency(
    target: Target, fleet: Fleet, seq: Sequence, viewers: int, edits: int
) -> dict[str, Any]:
    """``edits`` separate edits, each measured from send to every client's receipt.

    The next edit goes out only once the last one reached everybody (or 10 s
    passed), so each figure is one event's fan-out, not a queue of them.
    """
    fleet.reset()
    sends: dict[int, float] = {}
    cpu0 = cpu_seconds(target.pid)
    for k in range(1, edits + 1):
        n = seq.next()
        sends[n] = target.publish(n)
        deadline = time.monotonic() + 10
        time.sleep(0.02)
        while time.monotonic() < deadline:
            if fleet.summary()["deliveries"] >= viewers * k:
                break
            time.sleep(0.05)
        time.sleep(0.05)
    cpu = cpu_seconds(target.pid) - cpu0
    values, missing = fleet.latencies(sends)
    return {
        "p50_ms": percentile(values, 50),
        "p95_ms": percentile(values, 95),
        "p99_ms": percentile(values, 99),
        "max_ms": max(values, default=float("nan")),
        "missing": missing,
        "latency_cpu_us": cpu / max(1, len(values)) * 1e6,
    }


def saturate(
    target: Target, fleet: Fleet, seq: Sequence, viewers: int, secs: float
) -> dict[str, float]:
    """Publish as fast as deliveries complete (≤ IN_FLIGHT events outstanding)."""
    fleet.reset()
    published = 0
    start_deliveries = 0
    started = time.monotonic()
    cpu0 = cpu_seconds(target.pid)
    delivered = 0
    while time.monotonic() - started < secs:
        if published - delivered // max(1, viewers) < IN_FLIGHT:
            target.publish(seq.next())
            published += 1
        else:
            time.sleep(0.005)
        delivered = fleet.summary()["deliveries"] - start_deliveries
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(target.pid) - cpu0
    result = {
        "events": published,
        "deliveries": delivered,
        "deliveries_per_s": delivered / elapsed,
        "cpu_s": cpu,
        "cpu_us_per_delivery": cpu / max(1, delivered) * 1e6,
        "secs": elapsed,
    }
    wait_idle(target.pid)
    return result


@dataclass
class Run:
    target: str
    publish_cpu_ms: float = 0.0  # one publish with nobody listening (a PATCH for ours)
    levels: list[Level] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def run(
    target: Target,
    levels: list[int],
    *,
    edits: int,
    saturation_levels: set[int],
    saturation_secs: float,
    after: Callable[[Fleet], dict[str, Any]] | None = None,
) -> Run:
    """Grow the audience level by level; ``after`` runs on the same streams at the end."""
    fleet = Fleet(target.port, kind=target.kind, path=target.path, headers=target.headers)
    seq = Sequence()
    out = Run(target=target.name)
    results = out.levels
    try:
        for _ in range(20):  # warm the code paths (and our statement cache) first
            target.publish(seq.next())
        cpu0 = cpu_seconds(target.pid)
        # Enough publishes that /proc's 10 ms clock ticks do not dominate.
        for _ in range(BASELINE_PUBLISHES):
            target.publish(seq.next())
        out.publish_cpu_ms = (cpu_seconds(target.pid) - cpu0) / BASELINE_PUBLISHES * 1000
        wait_idle(target.pid)
        base = rss_kib(target.pid)
        for viewers in levels:
            opened = fleet.open_to(viewers)
            wait_idle(target.pid)
            alive = fleet.summary()["alive"]
            level = Level(viewers=alive, open_secs=opened["secs"])
            level.rss_kib = rss_kib(target.pid)
            level.rss_per_stream_kib = (level.rss_kib - base) / max(1, alive)
            count = edits if viewers <= 1000 else 10
            for key, value in latency(target, fleet, seq, alive, count).items():
                setattr(level, key, value)
            if viewers in saturation_levels:
                sat = saturate(target, fleet, seq, alive, saturation_secs)
                # The same figure without the publishing itself (for ours: the PATCH).
                fanout_cpu = sat["cpu_s"] - sat["events"] * out.publish_cpu_ms / 1000
                sat["net_cpu_us_per_delivery"] = fanout_cpu / max(1, sat["deliveries"]) * 1e6
                level.saturation = sat
            log(
                f"{target.name} @{alive}: open {level.open_secs:.1f}s, "
                f"rss {level.rss_per_stream_kib:.1f} KiB/stream, p50 {level.p50_ms:.1f} "
                f"p99 {level.p99_ms:.1f} ms (missing {level.missing}), "
                f"sat {level.saturation.get('deliveries_per_s', 0):.0f}/s "
                f"{level.saturation.get('cpu_us_per_delivery', 0):.1f} us"
            )
            results.append(level)
        if after is not None:
            out.extra = after(fleet)
    finally:
        fleet.stop()
    return out
