"""The write path's targets and results.md sections (bench/writesteps.py's figures).

A step with errors (any answer but a 200, a save not sent on schedule, an
outbox event missing) never passes, whatever its figure.
"""

from __future__ import annotations

import math
from typing import Any

SAVES_SQLITE = 1000.0
SAVES_PG = 800.0
PACED_P99_MS = 25.0
CPU_PER_SAVE_MS = 1.0
CHAIN_ROOM = 2.0  # "room to spare": a process takes at least twice a chain's saves
MIXED_P99_MS = 50.0
MIXED_SLOWEST_MS = 100.0


def _row(
    name: str, goal: str, value: float | None, ok: bool, unit: str, errors: int = 0
) -> dict[str, Any]:
    if value is None or math.isnan(value):
        return {"target": name, "goal": goal, "value": "not measured", "pass": None}
    text = f"{value:,.1f}{unit}" + (f" ({errors:,} errors)" if errors else "")
    return {"target": name, "goal": goal, "value": text, "pass": ok and not errors}


def _missing(name: str, goal: str, why: str = "not measured") -> dict[str, Any]:
    return {"target": name, "goal": goal, "value": why, "pass": None}


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    out += _sqlite(results.get("writes"))
    out += _postgresql(results.get("writes-pg"))
    out += _mixed(results.get("mixed"))
    out += _workers(results.get("workers"))
    return out


def _off_row(name: str, off: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The same saturation with group commit off: for comparison, never a pass or a miss."""
    if not off:
        return []
    row = _row(
        f"{name}, group commit off",
        "for comparison",
        off["saves_per_s"],
        True,
        "/s",
        off["error_count"],
    )
    return [{**row, "pass": None}]


def _sqlite(run: dict[str, Any] | None) -> list[dict[str, Any]]:
    goal = f"≥ {SAVES_SQLITE:,.0f}/s"
    if not run:
        return [_missing("saves/s per process, SQLite (synchronous=FULL)", goal)]
    n = run["editors"]
    on, pace = run["saturation"], run["paced"]
    name = f"saves/s per process, SQLite (synchronous=FULL), {n} editors"
    return [
        _row(
            name,
            goal,
            on["saves_per_s"],
            on["saves_per_s"] >= SAVES_SQLITE,
            "/s",
            on["error_count"],
        ),
        *_off_row(name, run.get("group_commit_off")),
        _p99_row(f"{pace['rate']:g} PATCH/s", pace),
        *_chain(on, run.get("chain")),
        _row(
            "server CPU per save (saturation, SQLite)",
            f"≤ {CPU_PER_SAVE_MS:g} ms",
            on["server_cpu_ms_per_save"],
            on["server_cpu_ms_per_save"] <= CPU_PER_SAVE_MS,
            " ms",
            on["error_count"],
        ),
    ]


def _p99_row(rate: str, pace: dict[str, Any]) -> dict[str, Any]:
    return _row(
        f"p99 save latency at {rate} (open loop, SQLite)",
        f"≤ {PACED_P99_MS:g} ms",
        pace["p99_ms"],
        pace["p99_ms"] <= PACED_P99_MS,
        " ms",
        pace["error_count"],
    )


def _chain(on: dict[str, Any], pace: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A chain's saves on one process: their p99, and how many chains' saves it takes."""
    if pace is None:
        return []
    rate = pace["rate"]
    room = on["saves_per_s"] / rate
    return [
        _p99_row(f"a chain's {rate:g} PATCH/s", pace),
        _row(
            f"one process's saves/s over a chain's {rate:g}/s (SQLite)",
            f"≥ {CHAIN_ROOM:g}×",
            room,
            room >= CHAIN_ROOM,
            "×",
            on["error_count"],
        ),
    ]


def _postgresql(run: dict[str, Any] | None) -> list[dict[str, Any]]:
    name, goal = "saves/s per process, PostgreSQL (synchronous_commit=on)", f"≥ {SAVES_PG:,.0f}/s"
    if not run or "saves_per_s" not in run:
        return [_missing(name, goal, (run or {}).get("skipped", "not measured"))]
    durable = run["synchronous_commit"] == "on" and run["fsync"] == "on"
    name = f"{name}, {run['editors']} editors"
    if not durable:
        name += f" — ran with synchronous_commit={run['synchronous_commit']}, fsync={run['fsync']}"
    ok = durable and run["saves_per_s"] >= SAVES_PG
    return [_row(name, goal, run["saves_per_s"], ok, "/s", run["error_count"])]


def _mixed(run: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not run or "delivery_p99_ms" not in run:
        return [_missing("mixed load: p99 delivery", f"≤ {MIXED_P99_MS:g} ms")]
    who = f"{run['viewers']:,} viewers while {run['editors']} editors type"
    errors = run["error_count"] + run["missing"]
    return [
        _row(
            f"mixed load, {who}: p99 delivery",
            f"≤ {MIXED_P99_MS:g} ms",
            run["delivery_p99_ms"],
            run["delivery_p99_ms"] <= MIXED_P99_MS,
            " ms",
            errors,
        ),
        _row(
            f"mixed load, {who}: slowest save",
            f"≤ {MIXED_SLOWEST_MS:g} ms",
            run["save_max_ms"],
            run["save_max_ms"] <= MIXED_SLOWEST_MS,
            " ms",
            run["error_count"],
        ),
    ]


def _workers(run: dict[str, Any] | None) -> list[dict[str, Any]]:
    name = "serve --workers 2 vs 1 (Redis, SQLite)"
    if not run or "one" not in run:
        return [_missing(name, "reported", (run or {}).get("skipped", "not measured"))]
    one, two = run["one"], run["two"]
    errors = one["saves"]["error_count"] + two["saves"]["error_count"]
    saves = (
        f"{two['saves']['saves_per_s']:,.0f} vs {one['saves']['saves_per_s']:,.0f}/s"
        f" ({run['saves_ratio']:.2f}×)" + (f" ({errors:,} errors)" if errors else "")
    )
    fan = (
        f"{two['fanout']['deliveries_per_s']:,.0f} vs {one['fanout']['deliveries_per_s']:,.0f}/s"
        f" ({run['deliveries_ratio']:.2f}×, {two['viewers']:,} viewers)"
    )
    return [
        {"target": f"{name}: saves/s", "goal": "reported", "value": saves, "pass": None},
        {"target": f"{name}: deliveries/s", "goal": "reported", "value": fan, "pass": None},
    ]


def _save_line(label: str, r: dict[str, Any]) -> str:
    return (
        f"| {label} | {r['saves']:,} | {r['saves_per_s']:,.0f} | {r['p50_ms']:.1f} "
        f"| {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['server_cpu_ms_per_save']:.2f} "
        f"| {r['generator_cpu_ms_per_save']:.3f} | {r['errors'] or ''} |"
    )


SAVES_HEAD = [
    "| run | saves | saves/s | p50 ms | p99 ms | max ms | server CPU ms/save "
    "| generator CPU ms/save | errors |",
    "|---|---|---|---|---|---|---|---|---|",
]


def markdown(results: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    run = results.get("writes")
    if run:
        lines += ["", f"## Saves, SQLite ({run['editors']} editors, browser-like PATCH)", ""]
        lines += SAVES_HEAD
        lines.append(_save_line("closed loop", run["saturation"]))
        if run.get("group_commit_off"):
            lines.append(_save_line("closed loop, group commit off", run["group_commit_off"]))
        for pace in (run.get("chain"), run["paced"]):
            if pace is not None:
                label = f"paced {pace['rate']:g}/s, {pace['editors']} connections"
                lines.append(_save_line(label, pace))
    run = results.get("writes-pg")
    if run:
        lines += ["", "## Saves, PostgreSQL", ""]
        if "saves_per_s" in run:
            lines.append(
                f"synchronous_commit={run['synchronous_commit']}, fsync={run['fsync']}, "
                f"{run['editors']} editors."
            )
            lines += ["", *SAVES_HEAD, _save_line("closed loop", run)]
        else:
            lines.append(f"Skipped: {run.get('skipped')}")
    lines += _mixed_md(results.get("mixed"))
    lines += _workers_md(results.get("workers"))
    return lines


def _mixed_md(run: dict[str, Any] | None) -> list[str]:
    if not run:
        return []
    return [
        "",
        f"## Mixed load: {run['viewers']:,} viewers, {run['editors']} editors typing",
        "",
        f"{run['saves']:,} saves in {run['secs']:g} s, {run['deliveries']:,} deliveries"
        f" ({run['missing']:,} missing); delivery p50 {run['delivery_p50_ms']:.1f} ms,"
        f" p99 {run['delivery_p99_ms']:.1f} ms; save p99 {run['save_p99_ms']:.1f} ms,"
        f" slowest {run['save_max_ms']:.1f} ms; errors {run['errors'] or 'none'}.",
    ]


def _workers_md(run: dict[str, Any] | None) -> list[str]:
    if not run:
        return []
    if "one" not in run:
        return ["", "## Several workers", "", f"Skipped: {run.get('skipped')}"]
    lines = ["", "## Several workers (Redis, SQLite)", "", *SAVES_HEAD]
    for label, part in (("1 worker", run["one"]), ("2 workers", run["two"])):
        lines.append(_save_line(label, part["saves"]))
    lines += ["", "| workers | viewers | deliveries/s |", "|---|---|---|"]
    for label, part in (("1", run["one"]), ("2", run["two"])):
        lines.append(
            f"| {label} | {part['viewers']:,} | {part['fanout']['deliveries_per_s']:,.0f} |"
        )
    return lines
