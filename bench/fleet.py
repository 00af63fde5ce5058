"""The load-generator processes of one measurement, driven as one."""

from __future__ import annotations

import json
import math
from typing import Any

from common import BENCH, PYTHON, Proc, log

PER_PROCESS = 2500
MAX_PROCESSES = 8


class Fleet:
    """``open(total)`` spreads streams over as many processes as it needs (≤ 2,500 each)."""

    def __init__(self, port: int, *, kind: str = "sse", path: str, headers: dict[str, str]) -> None:
        self.port = port
        self.kind = kind
        self.path = path
        self.headers = headers
        self.procs: list[Proc] = []
        self.counts: list[int] = []

    def _spawn(self, wanted: int) -> None:
        while len(self.procs) < wanted:
            self.procs.append(
                Proc(
                    [
                        PYTHON,
                        str(BENCH / "loadgen.py"),
                        "--port",
                        str(self.port),
                        "--kind",
                        self.kind,
                    ],
                    pipe=True,
                )
            )
            self.counts.append(0)

    def _ask(self, commands: list[dict[str, Any] | None]) -> list[dict[str, Any]]:
        asked = []
        for proc, command in zip(self.procs, commands, strict=True):
            if command is None:
                continue
            assert proc.popen.stdin is not None
            proc.popen.stdin.write((json.dumps(command) + "\n").encode())
            proc.popen.stdin.flush()
            asked.append(proc)
        answers = []
        for proc in asked:
            assert proc.popen.stdout is not None
            line = proc.popen.stdout.readline()
            if not line:
                raise RuntimeError(f"load generator {proc.pid} died")
            answers.append(json.loads(line))
        return answers

    def all(self, command: dict[str, Any]) -> list[dict[str, Any]]:
        return self._ask([dict(command) for _ in self.procs])

    @property
    def total(self) -> int:
        return sum(self.counts)

    def open_to(self, total: int, parallel: int = 64) -> dict[str, Any]:
        """Add streams until ``total`` are open, spread evenly; returns what failed."""
        self._spawn(min(MAX_PROCESSES, max(1, math.ceil(total / PER_PROCESS))))
        cap = math.ceil(total / len(self.procs))
        remaining = total - self.total
        commands: list[dict[str, Any] | None] = []
        for count in self.counts:
            extra = min(max(0, cap - count), max(0, remaining))
            remaining -= extra
            commands.append(
                None
                if extra <= 0
                else {
                    "cmd": "open",
                    "n": extra,
                    "path": self.path,
                    "headers": self.headers,
                    "parallel": parallel,
                }
            )
        answers = self._ask(commands)
        failed: dict[str, int] = {}
        for answer in answers:
            for key, value in answer["failed"].items():
                failed[key] = failed.get(key, 0) + value
        alive = self.stats()
        self.counts = [a["alive"] for a in alive]
        secs = max((a["secs"] for a in answers), default=0.0)
        if failed:
            log(f"  open_to({total}): {self.total} alive, failed {failed}")
        return {"alive": self.total, "failed": failed, "secs": secs}

    def stats(self) -> list[dict[str, Any]]:
        return self.all({"cmd": "stats"})

    def summary(self) -> dict[str, Any]:
        stats = self.stats()
        self.counts = [s["alive"] for s in stats]
        return {
            "alive": sum(s["alive"] for s in stats),
            "bytes": sum(s["bytes"] for s in stats),
            "beats": sum(s["beats"] for s in stats),
            "min_beats": min((s["min_beats"] for s in stats), default=0),
            "max_late": max((s["max_late"] for s in stats), default=0.0),
            "deliveries": sum(s["deliveries"] for s in stats),
        }

    def reset(self) -> None:
        self.all({"cmd": "reset"})

    def latencies(self, sends: dict[int, float]) -> tuple[list[float], int]:
        answers = self.all({"cmd": "latencies", "sends": {str(k): v for k, v in sends.items()}})
        values = [ms for a in answers for ms in a["ms"]]
        return values, sum(a["missing"] for a in answers)

    def stop(self) -> None:
        for proc in self.procs:
            try:
                assert proc.popen.stdin is not None
                proc.popen.stdin.write(b'{"cmd": "exit"}\n')
                proc.popen.stdin.flush()
            except OSError:
                pass
        for proc in self.procs:
            proc.stop(timeout=5)
        self.procs = []
        self.counts = []
