"""The write path's steps of ``make bench``: writes, writes-pg, mixed, workers.

Each starts its own servers on fresh databases, drives them with the lean
editors of ``writes.py`` and stops everything it started, whatever happens.
Rate limits are on (set far above what the run sends, so they never refuse
but every save pays for its check), as a deployment runs them.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import typing_sim
import writes
from common import ROOT, log, percentile
from fanout import Sequence, saturate, wait_idle
from fleet import Fleet
from targets import WarrantySync

RATE_LIMITED = {
    "WARRANTYSYNC_RATE_LIMIT_WRITES": "1000000/second",
    "WARRANTYSYNC_RATE_LIMIT_IP": "1000000/second",
}
PACED_RATE = 500.0
# A chain's saves (docs/performance.md, "The write path"): 100 branches with
# 10 people typing at once, each saving 0.11 times a second (the typing
# model's figure, `typing` step).
CHAIN_RATE = 110.0  # 100 * 10 * 0.11


def _servers() -> Any:
    sys.path.insert(0, str(ROOT / "tests"))
    import servers  # type: ignore[import-not-found]

    return servers


def _pids(target: WarrantySync) -> list[int]:
    """The server and, under ``--workers``, its workers."""
    pid = target.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def _saturate(target: WarrantySync, editors: list[writes.Editor], secs: float) -> dict[str, Any]:
    head = target.head()
    result = writes.measure(editors, lambda: writes.closed_loop(editors, secs), _pids(target))
    # One outbox event per committed save: the audit and outbox rows were written.
    result["committed"] = target.head() - head - len(editors) * 3  # minus the warm-up's
    if result["committed"] != result["saves"]:
        result["errors"]["outbox events != saves"] = abs(result["committed"] - result["saves"])
        result["error_count"] = sum(result["errors"].values())
    log(
        f"{target.name}: {result['saves_per_s']:.0f} saves/s, p99 {result['p99_ms']:.1f} ms, "
        f"{result['server_cpu_ms_per_save']:.2f} ms server CPU/save "
        f"({result['generator_cpu_ms_per_save']:.3f} ms ours), errors {result['errors']}"
    )
    return result


def _target(logs: Path, suffix: str, **kwargs: Any) -> WarrantySync:
    return WarrantySync(logs, suffix=suffix, extra_env=RATE_LIMITED, **kwargs)


def sqlite(logs: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Saturation (saves/s, CPU per save), paced runs at a chain's rate and at 500/s, then
    saturation without group commit."""
    target = _target(logs, "-writes")
    try:
        target.start()
        editors = writes.make_editors(target, p["write_editors"])
        crowd = editors[: p["saturation_editors"]]
        saturation = _saturate(target, crowd, p["write_secs"])
        paced = {}
        # The chain first: the 500/s run may leave the server behind for a moment.
        for name, rate in (("chain", CHAIN_RATE), ("paced", PACED_RATE)):
            pace = writes.measure(
                editors, lambda r=rate: writes.paced(editors, r, p["paced_secs"]), _pids(target)
            )
            log(f"paced {rate:g}/s: p99 {pace['p99_ms']:.1f} ms, errors {pace['errors']}")
            paced[name] = {"rate": rate, "editors": len(editors), **pace}
        # The same database and editors, every save in a transaction of its own
        # (docs/performance.md, "Group commit").
        target.extra_env = {**RATE_LIMITED, "WARRANTYSYNC_GROUP_COMMIT": "off"}
        target.restart()
        off = _saturate(target, crowd, p["write_secs"])
        return {
            "editors": len(crowd),
            "saturation": saturation,
            "group_commit_off": off,
            **paced,
        }
    finally:
        target.stop()


async def _setting(url: str, name: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return str(await conn.fetchval(f"SHOW {name}"))
    finally:
        await conn.close()


def postgresql(logs: Path, p: dict[str, Any]) -> dict[str, Any]:
    servers = _servers()
    reason = servers.available("postgresql")
    if reason is not None:
        return {"skipped": reason}
    with servers.PostgresServer(durable=True) as pg:
        durable = {n: asyncio.run(_setting(pg.url, n)) for n in ("synchronous_commit", "fsync")}
        target = _target(logs, "-writes-pg", database_url=pg.url)
        try:
            target.start()
            editors = writes.make_editors(target, p["saturation_editors"])
            result = _saturate(target, editors, p["write_secs"])
        finally:
            target.stop()
    return {"editors": len(editors), **durable, **result}


class MarkedTypist(typing_sim.Typist):
    """typing_sim's typist, whose saves carry the marker the viewers time (``m<seq>-``)."""

    def __init__(
        self, http: Any, case_id: int, n: int, totals: typing_sim.Totals, log: dict[str, Any]
    ) -> None:
        super().__init__(http, case_id, n, totals)
        self.log = log
        self.sent = ""  # the field's value on the server, marker included

    async def _send(self, value: str) -> None:
        seq = next(self.log["seq"])
        wire = f"m{seq}-{value}"
        body: dict[str, Any] = {"changes": {"notes": wire}, "expected": {"notes": self.sent}}
        if self.lock_token is not None:
            body["lock_tokens"] = {"notes": self.lock_token}
        headers = {**self.headers, "Idempotency-Key": str(uuid.uuid4())}
        self.totals.patches += 1
        self.log["sends"][seq] = time.time()
        started = time.perf_counter()
        try:
            answer = await self.http.patch(f"/api/cases/{self.case_id}", json=body, headers=headers)
        except Exception:
            self.totals.network_errors += 1
            return
        self.log["save_ms"].append((time.perf_counter() - started) * 1000)
        if answer.status_code == 200:
            self.totals.ok += 1
            self.confirmed, self.sent = value, wire
        else:
            code = answer.status_code
            self.totals.refused[code] = self.totals.refused.get(code, 0) + 1


def mixed(logs: Path, p: dict[str, Any]) -> dict[str, Any]:
    """Viewers on one branch while editors type on it (typing_sim's model)."""
    target = _target(logs, "-mixed")
    fleet: Fleet | None = None
    try:
        target.start()
        editors = writes.make_editors(target, p["mixed_editors"], prefix="typist")
        fleet = Fleet(target.port, path=target.path, headers=target.headers)
        opened = fleet.open_to(p["mixed_viewers"])
        wait_idle(target.pid)
        alive = fleet.summary()["alive"]
        fleet.reset()
        totals = typing_sim.Totals()
        record: dict[str, Any] = {"seq": itertools.count(1), "sends": {}, "save_ms": []}

        async def typing() -> writes.Tally:
            typists = [
                MarkedTypist(writes.SessionHttp(e), e.case_id, e.n, totals, record) for e in editors
            ]
            await asyncio.gather(*(t.type_for(p["mixed_secs"]) for t in typists))
            return writes.Tally()

        writes.measure(editors, typing, _pids(target), warm=False)
        time.sleep(1)  # the last saves' events reach everybody
        values, missing = fleet.latencies(record["sends"])
        errors = {f"status {k}": v for k, v in totals.refused.items()}
        if totals.network_errors:
            errors["network"] = totals.network_errors
        result = {
            "viewers": alive,
            "failed_opens": opened["failed"],
            "editors": len(editors),
            "secs": p["mixed_secs"],
            "saves": totals.ok,
            "errors": errors,
            "error_count": sum(errors.values()),
            "deliveries": len(values),
            "missing": missing,
            "delivery_p50_ms": percentile(values, 50),
            "delivery_p99_ms": percentile(values, 99),
            "save_p99_ms": percentile(record["save_ms"], 99),
            "save_max_ms": max(record["save_ms"], default=float("nan")),
        }
        log(f"mixed: {result}")
        return result
    finally:
        if fleet is not None:
            fleet.stop()
        target.stop()


def _one_config(
    target: WarrantySync, editors: list[writes.Editor], p: dict[str, Any]
) -> dict[str, Any]:
    saves = _saturate(target, editors, p["write_secs"])
    fleet = Fleet(target.port, path=target.path, headers=target.headers)
    try:
        fleet.open_to(p["workers_viewers"])
        alive = fleet.summary()["alive"]
        for pid in _pids(target):
            wait_idle(pid)
        fan = saturate(target, fleet, Sequence(), alive, p["workers_secs"])
    finally:
        fleet.stop()
    log(f"{target.workers} worker(s): {fan['deliveries_per_s']:.0f} deliveries/s to {alive}")
    return {"saves": saves, "viewers": alive, "fanout": fan}


def _both_up(target: WarrantySync, limit: float = 60.0) -> None:
    """The supervisor answers once one worker does: wait for the second to settle too."""
    deadline = time.monotonic() + limit
    while len(_pids(target)) < 1 + target.workers and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in _pids(target)[1:]:
        wait_idle(pid)


def workers(logs: Path, p: dict[str, Any]) -> dict[str, Any]:
    """``serve --workers 2`` on Redis against one worker on the same Redis and database."""
    servers = _servers()
    reason = servers.available("redis")
    if reason is not None:
        return {"skipped": reason}
    with servers.RedisServer() as redis:
        target = _target(logs, "-workers", redis_url=redis.url)
        try:
            target.start()
            editors = writes.make_editors(target, p["saturation_editors"])
            one = _one_config(target, editors, p)
            target.workers = 2
            target.restart()
            _both_up(target)
            two = _one_config(target, editors, p)
        finally:
            target.stop()
    return {
        "one": one,
        "two": two,
        "saves_ratio": two["saves"]["saves_per_s"] / max(1e-9, one["saves"]["saves_per_s"]),
        "deliveries_ratio": two["fanout"]["deliveries_per_s"]
        / max(1e-9, one["fanout"]["deliveries_per_s"]),
    }
