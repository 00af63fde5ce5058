"""The transport fast paths against the plain paths, side by side (docs/performance.md).

    .venv/bin/python bench/transport.py streams [--rounds 3] [--levels 1000,5000]
    .venv/bin/python bench/transport.py patch [--rounds 5] [--count 300]
    .venv/bin/python bench/transport.py sqlite [--rounds 4] [--count 200]

``streams``: one edit's fan-out (p50/p99), CPU per delivery at saturation and
RSS per idle stream, for direct writes under uvicorn (the default), the plain
ASGI path under uvicorn (``WARRANTYSYNC_FAST_PATHS=one_trip``) and the same
app under granian (its HTTP in Rust; the stream's plain ASGI path).
``patch``: server CPU per PATCH with the one-trip SQLite cursor and with the
stock aiosqlite adapter, under uvicorn and under granian. ``sqlite``: the
same two SQLite paths with the app in this process (no server, no socket, so
less noise): trips to aiosqlite's thread and process CPU per PATCH, the HTTP
client's share included and alike for both.

The variants run in turn within each round, so a busy moment of the machine
hits them alike; the table gives every round and the median. granian is a
measurement-only tool here (``pip install granian`` into the venv).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import fanout
from common import BENCH, log, raise_nofile
from probe import patch_cost
from targets import WarrantySync

STREAM_VARIANTS = {
    "uvicorn, direct writes": {"fast_paths": None, "server": "uvicorn"},
    "uvicorn, plain ASGI": {"fast_paths": "one_trip", "server": "uvicorn"},
    "granian, plain ASGI": {"fast_paths": None, "server": "granian"},
}
SQLITE_VARIANTS = {
    "one-trip cursor": {"fast_paths": "one_trip"},
    "stock adapter": {"fast_paths": "off"},
}
PATCH_VARIANTS = {
    "uvicorn, one-trip cursor": {"fast_paths": None, "server": "uvicorn"},
    "uvicorn, stock adapter": {"fast_paths": "direct", "server": "uvicorn"},
    "granian, one-trip cursor": {"fast_paths": None, "server": "granian"},
    "granian, stock adapter": {"fast_paths": "direct", "server": "granian"},
}


def streams_round(logs: Path, variant: dict[str, Any], levels: list[int]) -> dict[str, Any]:
    target = WarrantySync(logs, **variant)
    target.start()
    try:
        run = fanout.run(
            target,
            levels,
            edits=15,
            saturation_levels=set(levels),
            saturation_secs=4.0,
        )
    finally:
        target.stop()
    return {
        str(asked): {
            "viewers": level.viewers,
            "p50_ms": level.p50_ms,
            "p99_ms": level.p99_ms,
            "missing": level.missing,
            "cpu_us_per_delivery": level.saturation.get("cpu_us_per_delivery", 0.0),
            "deliveries_per_s": level.saturation.get("deliveries_per_s", 0.0),
            "rss_per_stream_kib": level.rss_per_stream_kib,
            "open_secs": level.open_secs,
        }
        for asked, level in zip(levels, run.levels, strict=True)
    }


def patch_round(logs: Path, variant: dict[str, Any], count: int) -> dict[str, float]:
    target = WarrantySync(logs, **variant)
    target.start()
    try:
        line = patch_cost(target, count, None)
    finally:
        target.stop()
    # "PATCH: 7.53 ms server CPU, 10.03 ms wall (300 in a row)"
    cpu = float(line.split("PATCH: ")[1].split(" ms")[0])
    wall = float(line.split("CPU, ")[1].split(" ms")[0])
    return {"cpu_ms": cpu, "wall_ms": wall}


def sqlite_round(logs: Path, fast_paths: str, count: int) -> dict[str, float]:
    """In this process: one app on a fresh database, ``count`` PATCHes through ASGI."""
    import asyncio

    import aiosqlite
    import httpx

    from warrantysync.app import create_app
    from warrantysync.config import Settings

    target = WarrantySync(logs)  # only for its database, user and token
    token = target.prepare()
    settings = Settings(**{**_env_settings(target), "fast_paths": fast_paths})

    async def measure() -> dict[str, float]:
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            headers = {"Authorization": f"Bearer {token}", "X-Client-Id": "driver"}
            async with httpx.AsyncClient(
                transport=transport, base_url="http://bench", headers=headers
            ) as http:
                created = await http.post("/api/branches/1/cases", json={"customer_name": "B"})
                path = f"/api/cases/{created.json()['id']}"
                for seq in range(30):  # warm the code paths and the statement cache
                    await http.patch(path, json={"changes": {"notes": f"w{seq}"}})
                original = aiosqlite.Connection._execute
                trips = 0

                async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
                    nonlocal trips
                    trips += 1
                    return await original(self, fn, *args, **kwargs)

                aiosqlite.Connection._execute = counted  # type: ignore[method-assign]
                try:
                    cpu0 = time.process_time()
                    for seq in range(count):
                        response = await http.patch(path, json={"changes": {"notes": f"m{seq}"}})
                        response.raise_for_status()
                    cpu = time.process_time() - cpu0
                finally:
                    aiosqlite.Connection._execute = original  # type: ignore[method-assign]
        return {"cpu_ms": cpu / count * 1e3, "trips": trips / count}

    try:
        return asyncio.run(measure())
    finally:
        target.stop()


def _env_settings(target: WarrantySync) -> dict[str, Any]:
    prefix = "WARRANTYSYNC_"
    return {k[len(prefix) :].lower(): v for k, v in target.env().items() if k.startswith(prefix)}


def median_of(rounds: list[dict[str, Any]], *path: str) -> float:
    values = []
    for result in rounds:
        value: Any = result
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("streams", "patch", "sqlite"))
    parser.add_argument("--rounds", type=int, default=0)
    parser.add_argument("--levels", default="1000,5000")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--only", default="", help="comma list of variant numbers, from 1")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "raw")
    args = parser.parse_args()
    raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="warrantysync-transport-"))
    variants = {"streams": STREAM_VARIANTS, "patch": PATCH_VARIANTS, "sqlite": SQLITE_VARIANTS}[
        args.what
    ]
    if args.only:
        keep = {int(n) - 1 for n in args.only.split(",")}
        variants = {k: v for i, (k, v) in enumerate(variants.items()) if i in keep}
    rounds = args.rounds or {"streams": 3, "patch": 5, "sqlite": 4}[args.what]
    levels = [int(n) for n in args.levels.split(",")]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for number in range(1, rounds + 1):
        for name, variant in variants.items():
            started = time.monotonic()
            if args.what == "streams":
                result: dict[str, Any] = streams_round(logs, variant, levels)
            elif args.what == "patch":
                result = patch_round(logs, variant, args.count)
            else:
                result = sqlite_round(logs, variant["fast_paths"], args.count)
            results[name].append(result)
            log(f"round {number}, {name} ({time.monotonic() - started:.0f} s): {result}")
            time.sleep(2)  # let the last server's sockets go
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"transport-{args.what}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"\nmedians of {rounds} rounds ({out}):")
    for name, got in results.items():
        if args.what == "sqlite":
            cpu = [r["cpu_ms"] for r in got]
            print(
                f"  {name}: {median_of(got, 'trips'):.1f} trips and"
                f" {median_of(got, 'cpu_ms'):.2f} ms process CPU per PATCH"
                f" (rounds {', '.join(f'{c:.2f}' for c in cpu)})"
            )
            continue
        if args.what == "patch":
            cpu = [r["cpu_ms"] for r in got]
            print(
                f"  {name}: {median_of(got, 'cpu_ms'):.2f} ms CPU per PATCH"
                f" (rounds {', '.join(f'{c:.2f}' for c in cpu)}),"
                f" {median_of(got, 'wall_ms'):.2f} ms wall"
            )
            continue
        for level in levels:
            key = str(level)
            p99s = ", ".join(f"{r[key]['p99_ms']:.0f}" for r in got)
            print(
                f"  {name} @{level}: p50 {median_of(got, key, 'p50_ms'):.1f} ms,"
                f" p99 {median_of(got, key, 'p99_ms'):.1f} ms"
                f" (rounds {p99s}),"
                f" CPU {median_of(got, key, 'cpu_us_per_delivery'):.1f} µs/delivery,"
                f" {median_of(got, key, 'deliveries_per_s'):.0f} deliveries/s,"
                f" RSS {median_of(got, key, 'rss_per_stream_kib'):.1f} KiB/stream,"
                f" open {median_of(got, key, 'open_secs'):.1f} s"
            )


if __name__ == "__main__":
    main()
