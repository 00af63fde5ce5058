"""``make bench``: warrantysync beside its peers, same fan-out work, one run.

    python bench/run.py            # full run (< 15 minutes on 2 cores)
    python bench/run.py --quick    # the same steps, small (about 2-3 minutes)

Steps: warrantysync on SQLite (latency, memory, saturation, then heartbeats
on time up to 19,500 streams on the same process), the three peers, the
typing simulation, two nodes on Redis + PostgreSQL, a branch of 50,000 cases
beside the 25-case demo branch (5,000 with --quick). Writes
``bench/results/results.json``, ``results.md`` and two PNG charts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import fanout
import large
import report
import scale
import typing_sim
import writesteps
from common import BENCH, log, raise_nofile
from fleet import Fleet
from targets import BetterSse, SocketIO, SseStarlette, Target, WarrantySync

# The write path (bench/writesteps.py): editors, seconds per measurement, audiences.
WRITES_QUICK = {
    "write_editors": 16,
    "saturation_editors": 16,
    "write_secs": 3.0,
    "paced_secs": 3.0,
    "mixed_viewers": 500,
    "mixed_editors": 20,
    "mixed_secs": 10.0,
    "workers_viewers": 200,
    "workers_secs": 3.0,
}
WRITES_FULL = {
    "write_editors": 48,
    "saturation_editors": 16,
    "write_secs": 8.0,
    "paced_secs": 10.0,
    "mixed_viewers": 2000,
    "mixed_editors": 50,
    "mixed_secs": 30.0,
    "workers_viewers": 1000,
    "workers_secs": 6.0,
}


def plan(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "levels": [100, 1000],
            "saturation_levels": [1000],
            "edits": 15,
            "saturation_secs": 4.0,
            "search": [1000],
            "heartbeat": 5.0,
            "typing_secs": 10.0,
            "cluster_viewers": 200,
            "large_rows": 5000,
            **WRITES_QUICK,
        }
    return {
        "levels": [100, 1000, 5000, 10000],
        "saturation_levels": [1000, 5000, 10000],
        "edits": 25,
        "saturation_secs": 6.0,
        # This sandbox caps open files at 20,000 per process (no CAP_SYS_RESOURCE to
        # raise the hard limit), and the server needs a few dozen for itself.
        "search": [10000, 15000, 19500],
        "heartbeat": 30.0,
        "typing_secs": 30.0,
        "cluster_viewers": 2000,
        "large_rows": 50000,
        **WRITES_FULL,
    }


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpus = sum(1 for line in cpuinfo if line.startswith("processor"))
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    python = platform.python_version()
    return f"{cpus} x {model}, {mem} GiB, Linux {platform.release()}, Python {python}"


def measure(target: Target, p: dict[str, Any], after: Any = None) -> dict[str, Any]:
    target.start()
    try:
        result = fanout.run(
            target,
            p["levels"],
            edits=p["edits"],
            saturation_levels=set(p["saturation_levels"]),
            saturation_secs=p["saturation_secs"],
            after=after,
        )
        return dataclasses.asdict(result)
    finally:
        target.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small levels, about 2-3 minutes")
    parser.add_argument("--out", type=Path, default=BENCH / "results")
    parser.add_argument(
        "--only",
        default="",
        help="comma list: ours,peers,typing,cluster,large,writes,writes-pg,mixed,workers",
    )
    args = parser.parse_args()
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C, so every process we started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = set(filter(None, args.only.split(",")))
    p = plan(args.quick)
    limit = raise_nofile()
    log(f"open-file limit {limit}; plan {p}")
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "logs"
    logs.mkdir(exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "levels": p["levels"],
        "saturation_levels": p["saturation_levels"],
        "plan": p,
        "fanout": {},
    }

    def step(name: str, work: Any) -> None:
        if only and name.split(":")[0] not in only:
            return
        log(f"--- {name}")
        try:
            work()
        except Exception as exc:
            log(f"{name} failed: {exc!r}")
            results.setdefault("errors", {})[name] = traceback.format_exc()

    def ours() -> None:
        target = WarrantySync(logs, heartbeat=p["heartbeat"])

        def search(fleet: Fleet) -> dict[str, Any]:
            return scale.heartbeats(target, fleet, p["search"])

        run = measure(target, p, after=search)
        results["heartbeats"] = run.pop("extra")
        results["fanout"]["warrantysync"] = run

    def peer(cls: type[Target]) -> None:
        time.sleep(2)  # let the previous target's sockets and processes go
        target = cls(logs)
        run = measure(target, p)
        run.pop("extra")
        results["fanout"][target.name] = run

    def typing() -> None:
        target = WarrantySync(logs, suffix="-typing")
        target.start()
        try:
            results["typing"] = typing_sim.run(target, 100, p["typing_secs"])
            log(f"typing: {results['typing']}")
        finally:
            target.stop()

    def cluster() -> None:
        results["cluster"] = scale.cluster(logs, p["cluster_viewers"], p["edits"])

    step("ours", ours)
    for cls in (BetterSse, SseStarlette, SocketIO):
        step(f"peers:{cls.name}", lambda cls=cls: peer(cls))
    step("typing", typing)
    step("cluster", cluster)
    step("large", lambda: results.update(large=large.run(logs, p["large_rows"])))
    for name, work in (
        ("writes", writesteps.sqlite),
        ("writes-pg", writesteps.postgresql),
        ("mixed", writesteps.mixed),
        ("workers", writesteps.workers),
    ):
        step(name, lambda name=name, work=work: results.update({name: work(logs, p)}))
    results["duration_s"] = time.monotonic() - started
    rows = report.evaluate(results)
    results["targets"] = rows
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    (args.out / "results.md").write_text(report.markdown(results, rows))
    try:
        report.charts(results, args.out)
    except ImportError as exc:  # matplotlib: `make bench` installs it
        log(f"no charts: {exc}")
    for row in rows:
        verdict = "n/a " if row["pass"] is None else ("PASS" if row["pass"] else "MISS")
        print(f"{verdict}  {row['target']}: {row['value']} (goal {row['goal']})")
    log(f"done in {results['duration_s']:.0f} s; see {args.out / 'results.md'}")


if __name__ == "__main__":
    main()
