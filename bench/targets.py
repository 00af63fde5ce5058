"""The servers under test: warrantysync itself and the three peers.

Each target starts as its own process, exposes ``publish(seq)`` (one ~200-byte
event carrying the marker ``"notes":"m<seq>`` to every open stream) and is
stopped by its process group. warrantysync publishes through a real PATCH
(database commit, outbox, broker); the peers broadcast what they are given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import BENCH, HOST, PYTHON, Proc, free_port, log, wait_http

PAD = "x" * 56
_CLI_BATCH = """
import contextlib, io, json, sys
from warrantysync.cli import main
outputs = []
for args in json.loads(sys.stdin.read()):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(args, standalone_mode=False)
    outputs.append(printed.getvalue().strip())
print(json.dumps(outputs))
"""
EMAIL = "bench@example.com"
PW = "x" * 12


def payload(seq: int) -> dict[str, Any]:
    """The JSON body of a ``case-updated`` event, as warrantysync sends it."""
    return {
        "case_id": 1,
        "changes": {"notes": f"m{seq}-{PAD}"},
        "version": seq,
        "by": {"id": 1, "name": "Bench User"},
        "client_id": "driver",
    }


class Target:
    name = ""
    kind = "sse"  # what loadgen.py speaks to it
    path = "/events"

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.port = free_port()
        self.proc: Proc | None = None
        self.client: httpx.Client | None = None
        self.headers: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        self.proc = Proc(
            self.command(), env=self.env(), log=self.logs / f"{self.name}.log", cwd=BENCH
        )
        wait_http(f"{self.url}/healthz", self.proc)
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=self.headers)

    def publish(self, seq: int) -> float:
        """Send one event; returns the time.time() just before sending."""
        assert self.client is not None
        body = json.dumps(payload(seq), separators=(",", ":")).encode()
        sent = time.time()
        response = self.client.post("/publish", content=body)
        response.raise_for_status()
        return sent

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


class SseStarlette(Target):
    name = "sse-starlette"

    def command(self) -> list[str]:
        return [PYTHON, str(BENCH / "peers" / "starlette_server.py"), str(self.port)]


class SocketIO(Target):
    name = "python-socketio"
    kind = "sio"
    path = "/socket.io/?EIO=4&transport=websocket"

    def command(self) -> list[str]:
        return [PYTHON, str(BENCH / "peers" / "socketio_server.py"), str(self.port)]


class BetterSse(Target):
    name = "better-sse"

    def command(self) -> list[str]:
        return ["node", str(BENCH / "peers" / "node" / "server.mjs"), str(self.port)]

    def start(self) -> None:
        if not (BENCH / "peers" / "node" / "node_modules" / "better-sse").exists():
            raise RuntimeError("better-sse is not installed: run `make bench` (npm install)")
        super().start()


class WarrantySync(Target):
    """``warrantysync serve`` on a fresh database, one user with an API token."""

    name = "warrantysync"

    def __init__(
        self,
        logs: Path,
        *,
        heartbeat: float = 30.0,
        database_url: str | None = None,
        redis_url: str | None = None,
        setup: bool = True,
        suffix: str = "",
        fast_paths: str | None = None,
        server: str = "uvicorn",
        workers: int = 1,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(logs)
        self.name = f"warrantysync{suffix}"
        self.dir = Path(tempfile.mkdtemp(prefix="warrantysync-bench-"))
        self.database_url = database_url or f"sqlite+aiosqlite:///{self.dir / 'bench.db'}"
        self.redis_url = redis_url
        self.heartbeat = heartbeat
        self.fast_paths = fast_paths  # WARRANTYSYNC_FAST_PATHS; None: the default
        self.server = server  # "uvicorn" (warrantysync serve) or "granian"
        self.workers = workers  # warrantysync serve --workers (needs redis_url when > 1)
        self.extra_env = extra_env or {}  # over the defaults below, e.g. rate limits on
        self.needs_setup = setup
        self.token = ""
        self.branch_id = 1
        self.case_id = 0
        self.path = ""

    @property
    def pid(self) -> int:
        """The serving process: for granian its worker, the child of the process we started."""
        pid = super().pid
        if self.server != "granian":
            return pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if len(children) != 1:
            raise RuntimeError(f"granian {pid} has {len(children)} workers, expected one")
        return int(children[0])

    def env(self) -> dict[str, str]:
        env = {
            "WARRANTYSYNC_DATABASE_URL": self.database_url,
            "WARRANTYSYNC_SECRET_KEY": "bench-secret-key-bench-secret-key-bench-secret",
            "WARRANTYSYNC_MAX_STREAMS_PER_USER": "1000000",
            # The typists (bench/typing_sim.py) are 100 "users" on one API token, each
            # renewing its lock without a stream of its own: lift the hoarding limits.
            "WARRANTYSYNC_MAX_LOCKS_PER_USER": "1000000",
            "WARRANTYSYNC_DISCONNECT_GRACE": "3600",
            "WARRANTYSYNC_RATE_LIMIT_WRITES": "off",
            "WARRANTYSYNC_RATE_LIMIT_LOCKS": "off",
            "WARRANTYSYNC_RATE_LIMIT_LOGIN": "off",
            "WARRANTYSYNC_RATE_LIMIT_IP": "off",
            "WARRANTYSYNC_HEARTBEAT_INTERVAL": str(self.heartbeat),
            "WARRANTYSYNC_LOG_FORMAT": "text",
        }
        if self.redis_url:
            env["WARRANTYSYNC_REDIS_URL"] = self.redis_url
        if self.fast_paths is not None:
            env["WARRANTYSYNC_FAST_PATHS"] = self.fast_paths
        return {**env, **self.extra_env}

    def _python(self, argv: list[str], what: str, *, stdin: str = "", timeout: float) -> str:
        """Run the bench's Python with this server's settings; its stdout, stripped."""
        result = subprocess.run(
            [PYTHON, *argv],
            input=stdin,
            env={**os.environ, **self.env()},
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"warrantysync {what}: {result.stderr}{result.stdout}")
        return result.stdout.strip()

    def cli(self, *args: str) -> str:
        return self._python(["-m", "warrantysync", *args], " ".join(args), timeout=120)

    def cli_batch(self, commands: list[list[str]]) -> list[str]:
        """Several ``warrantysync`` commands in one interpreter; returns what each printed.

        The CLI itself, run in-process: starting Python and importing the
        package takes ~3 s per command on the bench machine.
        """
        printed = self._python(
            ["-c", _CLI_BATCH], str(commands), stdin=json.dumps(commands), timeout=300
        )
        outputs: list[str] = json.loads(printed.splitlines()[-1])
        return outputs

    def prepare(self) -> str:
        """Schema, a branch, one editor and an API token; returns the token."""
        outputs = self.cli_batch(
            [
                ["db", "upgrade"],
                ["users", "create", "--email", EMAIL, "--name", "Bench User", "--password", PW],
                ["branches", "create", "--name", "Bench branch"],
                ["members", "add", "--email", EMAIL, "--branch", "1", "--role", "manager"],
                ["tokens", "create", "--email", EMAIL, "--name", "bench"],
            ]
        )
        return outputs[-1].splitlines()[0]

    def command(self) -> list[str]:
        if self.server == "granian":
            # The same app under granian (measurement only, bench/transport.py): its
            # HTTP is Rust; the stream takes the plain ASGI path there.
            return [
                *(PYTHON, "-m", "granian", "--interface", "asgi", "--factory"),
                *("--host", HOST, "--port", str(self.port), "--loop", "uvloop"),
                *("--backlog", "16384", "--backpressure", "100000", "--no-ws"),
                *("--log-level", "warning", "--no-access-log"),
                "warrantysync.app:app_from_env",
            ]
        serve = [PYTHON, "-m", "warrantysync", "serve", "--host", HOST, "--port", str(self.port)]
        return [*serve, "--workers", str(self.workers)] if self.workers > 1 else serve

    def start(self) -> None:
        if self.needs_setup and not self.token:
            self.token = self.prepare()
        self.headers = {"Authorization": f"Bearer {self.token}", "X-Client-Id": "driver"}
        self.path = f"/api/branches/{self.branch_id}/events?client_id=c{{n}}"
        self.proc = Proc(
            self.command(), env=self.env(), log=self.logs / f"{self.name}.log", cwd=self.dir
        )
        wait_http(f"{self.url}/healthz", self.proc)
        self.client = httpx.Client(base_url=self.url, timeout=30, headers=self.headers)
        if not self.case_id:
            self.case_id = self.create_case("Bench customer")

    def create_case(self, name: str) -> int:
        assert self.client is not None
        response = self.client.post(
            f"/api/branches/{self.branch_id}/cases", json={"customer_name": name}
        )
        response.raise_for_status()
        case_id: int = response.json()["id"]
        return case_id

    def head(self) -> int:
        assert self.client is not None
        response = self.client.get(f"/api/branches/{self.branch_id}/cases")
        return int(response.json()["last_event_id"])

    def publish(self, seq: int) -> float:
        assert self.client is not None
        body = json.dumps({"changes": {"notes": f"m{seq}-{PAD}"}}).encode()
        sent = time.time()
        response = self.client.patch(
            f"/api/cases/{self.case_id}",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        if response.status_code != 200:
            log(f"PATCH {response.status_code}: {response.text[:200]}")
        return sent

    def restart(self) -> None:
        """The server again on the same database and users, with the settings as they are now."""
        super().stop()
        self.start()

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)
