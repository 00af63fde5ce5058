"""Two quick probes for work on the hot paths, between full benchmark runs.

    .venv/bin/python bench/probe.py patch [N]     # server CPU and wall time of one PATCH
    .venv/bin/python bench/probe.py patch [N] --keyed   # ... as the browser saves
    .venv/bin/python bench/probe.py streams [N]   # RSS per idle stream with N open

Each starts its own ``warrantysync serve`` on a fresh SQLite database, like
``make bench`` does, and prints one line. ``--profile FILE`` (patch only)
records the server with py-spy (``--gil``) meanwhile: a flame graph when FILE
ends in ``.svg``, raw folded stacks otherwise.
"""

from __future__ import annotations

import argparse
import functools
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from common import BENCH, cpu_seconds, raise_nofile, rss_kib
from fanout import wait_idle
from fleet import Fleet
from targets import WarrantySync

PY_SPY = BENCH.parent / ".venv" / "bin" / "py-spy"


def keyed_save(target: WarrantySync, seq: int) -> None:
    """A save as the browser sends it: ``expected`` (the value it replaces) and a new key."""
    assert target.client is not None
    body = {"changes": {"notes": f"m{seq}"}, "expected": {"notes": f"m{seq - 1}"}}
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    response = target.client.patch(f"/api/cases/{target.case_id}", json=body, headers=headers)
    response.raise_for_status()


def patch_cost(target: WarrantySync, count: int, profile: Path | None, keyed: bool = False) -> str:
    save = target.publish
    if keyed:
        assert target.client is not None
        first = target.client.patch(
            f"/api/cases/{target.case_id}", json={"changes": {"notes": "m-1"}}
        )
        first.raise_for_status()
        save = functools.partial(keyed_save, target)
    for seq in range(30):  # warm the code paths and the statement cache
        save(seq)
    spy = None
    if profile is not None:
        args = [str(PY_SPY), "record", "-p", str(target.pid), "-o", str(profile)]
        kind = "flamegraph" if profile.suffix == ".svg" else "raw"
        args += ["-f", kind, "-r", "500", "--nonblocking", "--gil"]
        spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    cpu0, wall0 = cpu_seconds(target.pid), time.perf_counter()
    for seq in range(30, 30 + count):
        save(seq)
    cpu, wall = cpu_seconds(target.pid) - cpu0, time.perf_counter() - wall0
    if spy is not None:
        spy.send_signal(2)
        spy.wait(30)
    per_cpu, per_wall = cpu / count * 1e3, wall / count * 1e3
    what = "keyed PATCH" if keyed else "PATCH"
    return f"{what}: {per_cpu:.2f} ms server CPU, {per_wall:.2f} ms wall ({count} in a row)"


def stream_memory(target: WarrantySync, count: int) -> str:
    fleet = Fleet(target.port, kind=target.kind, path=target.path, headers=target.headers)
    try:
        for seq in range(5):
            target.publish(seq)
        fleet.open_to(50)
        wait_idle(target.pid)
        base = rss_kib(target.pid)
        opened = fleet.open_to(count + 50)
        wait_idle(target.pid)
        alive = fleet.summary()["alive"] - 50
        per = (rss_kib(target.pid) - base) / max(1, alive)
        return f"streams: {alive} opened in {opened['secs']:.1f} s, {per:.1f} KiB RSS each"
    finally:
        fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("patch", "streams"))
    parser.add_argument("count", type=int, nargs="?", default=0)
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument(
        "--keyed", action="store_true", help="patch: with Idempotency-Key and expected"
    )
    args = parser.parse_args()
    raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="warrantysync-probe-"))
    target = WarrantySync(logs)
    target.start()
    try:
        if args.what == "patch":
            print(patch_cost(target, args.count or 300, args.profile, args.keyed))
        else:
            print(stream_memory(target, args.count or 2000))
    finally:
        target.stop()


if __name__ == "__main__":
    main()
