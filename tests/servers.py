"""Real Redis, PostgreSQL and MariaDB servers for tests, each a private child process.

Every server gets a free loopback port, its own temporary directory and its own
session (so its own process group), and is stopped through that group's id --
never by name -- so a test run cannot touch a system service, the default
ports 5432/3306/6379, or another run's servers.  A server counts as started
only once it answers a real request, not merely when its port accepts.

Nothing here imports pytest: ``conftest.py`` wraps these classes in fixtures,
and benchmark or fault scripts may use them directly::

    with PostgresServer() as pg:
        engine = create_async_engine(pg.url)

As root, PostgreSQL refuses to run, so ``initdb`` and ``postgres`` run as the
``postgres`` OS user (the temporary directory is handed to it); MariaDB runs
as root with ``--user=root``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

__all__ = [
    "Kind",
    "MariaDBServer",
    "PostgresServer",
    "RedisServer",
    "ServerError",
    "available",
    "free_port",
]

Kind = Literal["redis", "postgresql", "mysql", "nginx"]

HOST = "127.0.0.1"
# Debian keeps mariadbd in /usr/sbin, which is not on an ordinary user's PATH.
_SEARCH_PATH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"]
)
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_INSTALL_HINT = "run `make test` as root, or apt-get install"


class ServerError(RuntimeError):
    """A server did not start, did not answer, or refused a setup command."""


def free_port() -> int:
    """A loopback TCP port nobody listens on at the moment of asking."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _which(name: str) -> str | None:
    return shutil.which(name, path=_SEARCH_PATH)


def _is_root() -> bool:
    return os.geteuid() == 0


def _postgres_bin_dir() -> Path | None:
    """Debian puts server binaries in /usr/lib/postgresql/<major>/bin; take the newest."""
    candidates = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if path.parent.name.isdigit() and (path / "postgres").exists()
    ]
    if candidates:
        return max(candidates, key=lambda path: int(path.parent.name))
    initdb = _which("initdb")
    return Path(initdb).parent if initdb else None


def _postgres_user_missing() -> bool:
    if not _is_root():
        return False
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return True
    return False


def available(kind: Kind) -> str | None:
    """None when servers of this kind can be started here, else why not (a skip reason)."""
    if kind == "redis":
        if _which("redis-server") is None:
            return f"redis-server not found ({_INSTALL_HINT} redis-server)"
    elif kind == "postgresql":
        bin_dir = _postgres_bin_dir()
        tools = ("initdb", "postgres", "pg_isready", "psql")
        if bin_dir is None or not all((bin_dir / tool).exists() for tool in tools):
            return f"PostgreSQL server binaries not found ({_INSTALL_HINT} postgresql)"
        if _postgres_user_missing():
            return "running as root but there is no `postgres` OS user to run PostgreSQL as"
    elif kind == "mysql":
        if _which("mariadbd") is None and _which("mysqld") is None:
            return f"mariadbd/mysqld not found ({_INSTALL_HINT} mariadb-server)"
        if _which("mariadb-install-db") is None and _which("mysql_install_db") is None:
            return f"mariadb-install-db not found ({_INSTALL_HINT} mariadb-server)"
        if _which("mariadb") is None and _which("mysql") is None:
            return f"mariadb client not found ({_INSTALL_HINT} mariadb-client)"
    elif kind == "nginx":
        for tool, package in (("nginx", "nginx"), ("openssl", "openssl")):
            if _which(tool) is None:
                return f"{tool} not found ({_INSTALL_HINT} {package})"
    else:
        raise ValueError(f"unknown server kind {kind!r}")
    return None


def _require(*names: str) -> str:
    for name in names:
        path = _which(name)
        if path is not None:
            return path
    raise ServerError(f"none of {', '.join(names)} found")


def _client_env() -> dict[str, str]:
    # A developer's PGHOST/PGPASSWORD/MYSQL_PWD must not redirect our clients.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "MYSQL", "MARIADB"))
    }


_running: set[_Server] = set()


@atexit.register
def _stop_all() -> None:
    # Last resort when a test run ends without fixture teardown (e.g. KeyboardInterrupt).
    for server in list(_running):
        server.stop()


class _Server:
    """Start, wait for, and stop one server process in its own process group.

    Subclasses say how to prepare the directory once (``_prepare``), the command
    line (``_command``), how to tell it answers (``_answers``) and what to set up
    once it does (``_setup``).
    """

    name: ClassVar[str]
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    start_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0

    def __init__(self) -> None:
        self.port = 0
        self._dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    # -- public -----------------------------------------------------------------

    @property
    def dir(self) -> Path:
        """The server's private temporary directory (removed by stop())."""
        if self._dir is None:
            raise ServerError(f"{self.name} is not started")
        return self._dir

    @property
    def pid(self) -> int | None:
        """The server's pid, which is also its process group id; None when stopped."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        if self._proc is not None:
            raise ServerError(f"{self.name} is already running on port {self.port}")
        self._dir = Path(tempfile.mkdtemp(prefix=f"warrantysync-{self.name}-"))
        _running.add(self)
        try:
            self._prepare()
            # free_port() can race with another process taking the port before the
            # server binds it; a server that died at once gets a fresh port.
            for attempt in range(3):
                self.port = free_port()
                try:
                    self._launch()
                    break
                except _ExitedEarly:
                    if attempt == 2:
                        raise
            self._setup()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the whole process group and delete the directory. Safe to repeat."""
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        _running.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- for subclasses ---------------------------------------------------------

    def _prepare(self) -> None:
        """Create what the server needs in self.dir before its first start."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _answers(self) -> bool:
        """True once the server on self.port answers a real request."""
        raise NotImplementedError

    def _setup(self) -> None:
        """Run once after the first start (create databases and so on)."""

    def _popen_kwargs(self) -> dict[str, Any]:
        """Extra subprocess arguments for the server and its setup tools (e.g. user=)."""
        return {}

    # -- process handling -------------------------------------------------------

    @property
    def _log_path(self) -> Path:
        return self.dir / f"{self.name}.log"

    def _log_tail(self, limit: int = 3000) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def _launch(self) -> None:
        with self._log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                **self._popen_kwargs(),
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._answers():
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise _ExitedEarly(
                    f"{self.name} exited with {code} before answering on port {self.port}; "
                    f"log:\n{self._log_tail()}"
                )
            if time.monotonic() > deadline:
                self._terminate()
                raise ServerError(
                    f"{self.name} did not answer on port {self.port} within "
                    f"{self.start_timeout:.0f} s; log:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _signal_group(self, signum: signal.Signals) -> None:
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signum)

    def _signal_tree(self, signum: signal.Signals) -> None:
        """Signal the group and every descendant, including those that left the group.

        PostgreSQL backends call setsid() when forked, so a group signal misses them.
        """
        if self._proc is None:
            return
        self._signal_group(signum)
        for pid in _descendants(self._proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._signal_group(self.stop_signal)
        self._signal_tree(signal.SIGCONT)  # a paused server must wake up to see it
        if not _wait_exited(proc.pid, self.stop_timeout):
            self._signal_tree(signal.SIGKILL)
        # The leader is a zombie until reaped, so its group id cannot have been
        # reused yet: kill whatever it left behind in its group, then reap it.
        self._signal_group(signal.SIGKILL)
        proc.wait()
        self._proc = None

    def _run_tool(self, args: list[str], *, as_server_user: bool = False) -> str:
        """Run a setup/client command; raise ServerError with its output if it fails."""
        extra = self._popen_kwargs() if as_server_user else {}
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.dir,
            env=_client_env(),
            timeout=self.start_timeout,
            check=False,
            **extra,
        )
        if result.returncode != 0:
            raise ServerError(
                f"{self.name}: {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stdout}{result.stderr}"
            )
        stdout: str = result.stdout
        return stdout

    def _answers_tool(self, args: list[str]) -> bool:
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            env=_client_env(),
            timeout=10,
            check=False,
        )
        return result.returncode == 0


class _ExitedEarly(ServerError):
    pass


def _descendants(root: int) -> list[int]:
    """Pids of all living descendants of ``root``, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # exited while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _wait_stopped(pids: list[int], timeout: float = 5.0) -> None:
    """Wait until every process is in the stopped state (or gone)."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                break  # gone
            if stat.rpartition(")")[2].split()[0] in ("T", "t"):
                break
            if time.monotonic() > deadline:
                raise ServerError(f"process {pid} did not stop within {timeout} s")
            time.sleep(0.005)


def _wait_exited(pid: int, timeout: float) -> bool:
    """Wait for a child to exit without reaping it (WNOWAIT keeps its pid reserved)."""
    deadline = time.monotonic() + timeout
    while True:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        if os.waitid(os.P_PID, pid, flags) is not None:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


class RedisServer(_Server):
    """redis-server with no persistence of its own; ``restart()`` simulates a restart."""

    name = "redis"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def restart(self, *, wipe_data: bool) -> None:
        """Stop and start again on the same port.

        ``wipe_data=True`` is a Redis that lost everything (crash, failover to an
        empty replica); ``wipe_data=False`` saves a snapshot first and loads it back.
        """
        if not wipe_data and self._call("SAVE") != b"+OK":
            raise ServerError("redis SAVE failed")
        self.down()
        self.up(wipe_data=wipe_data)

    def down(self) -> None:
        """The first half of ``restart()``: stop it, keep its port and directory.

        For tests that act while Redis is away; ``up()`` brings it back.
        """
        self._terminate()

    def up(self, *, wipe_data: bool) -> None:
        """The second half: start it again on the same port, with no data if ``wipe_data``."""
        if wipe_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self._launch()

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open and nothing answers, as in a partition."""
        self._signal_group(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_group(signal.SIGCONT)

    def _command(self) -> list[str]:
        return [
            _require("redis-server"),
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--dbfilename",
            "dump.rdb",
        ]

    def _answers(self) -> bool:
        # PONG, not LOADING or a bare accept.
        return self._call("PING") == b"+PONG"

    def _call(self, command: str) -> bytes:
        try:
            with socket.create_connection((HOST, self.port), timeout=5) as sock:
                sock.sendall(command.encode() + b"\r\n")
                return sock.recv(256).strip()
        except OSError:
            return b""


class PostgresServer(_Server):
    """A private PostgreSQL cluster with trust auth, tuned for speed over durability."""

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown; SIGTERM waits for clients to leave
    database = "warrantysync"

    def __init__(self, *, password: str | None = None, durable: bool = False) -> None:
        """``password``: TCP clients must give it (scram-sha-256), the socket stays trusted.

        ``durable``: PostgreSQL's own defaults (fsync, synchronous commits, full
        page writes) instead of the fast settings the other tests run with.
        """
        super().__init__()
        bin_dir = _postgres_bin_dir()
        if bin_dir is None:
            raise ServerError("PostgreSQL server binaries not found")
        self._bin = bin_dir
        self.password = password
        self.durable = durable

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str, *, password: str | None = None) -> str:
        secret = password if password is not None else self.password
        user = f"postgres:{secret}" if secret is not None else "postgres"
        return f"postgresql+asyncpg://{user}@{HOST}:{self.port}/{database}"

    def down(self) -> None:
        """Stop it (fast shutdown), keeping its port and data; ``up()`` starts it again."""
        self._terminate()

    def up(self) -> None:
        self._launch()

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        self._psql(f'CREATE DATABASE "{_checked_name(name)}"')
        return self.url_for(name)

    def pause(self) -> None:
        """Freeze the postmaster and every backend (SIGSTOP).

        New connections and queries on open ones hang instead of failing, like a
        database host that stopped answering; resume() lets them all go on.
        """
        if self._proc is None:
            raise ServerError("postgres is not running")
        # Signals arrive asynchronously: wait for each process to be really stopped,
        # and stop the postmaster first so that it cannot fork a backend we miss.
        self._signal_group(signal.SIGSTOP)
        _wait_stopped([self._proc.pid])
        backends = _descendants(self._proc.pid)
        for pid in backends:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        _wait_stopped(backends)

    def resume(self) -> None:
        self._signal_tree(signal.SIGCONT)

    @property
    def _data(self) -> Path:
        return self.dir / "data"

    def _popen_kwargs(self) -> dict[str, Any]:
        if not _is_root():
            return {}
        return {"user": "postgres", "group": "postgres", "extra_groups": []}

    def _prepare(self) -> None:
        if _is_root():
            shutil.chown(self.dir, "postgres", "postgres")
        auth = ["--auth=trust"]
        if self.password is not None:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(self.password + "\n")
            if _is_root():
                shutil.chown(pwfile, "postgres", "postgres")
            auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
        self._run_tool(
            [
                str(self._bin / "initdb"),
                "--pgdata",
                str(self._data),
                "--username=postgres",
                *auth,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            as_server_user=True,
        )

    def _command(self) -> list[str]:
        fast = ["-F", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
        return [
            str(self._bin / "postgres"),
            "-D",
            str(self._data),
            "-h",
            HOST,
            "-p",
            str(self.port),
            "-k",
            str(self.dir),
            *([] if self.durable else fast),
            "-c",
            "max_connections=200",
        ]

    def _answers(self) -> bool:
        return self._answers_tool(
            [str(self._bin / "pg_isready"), "-q", "-t", "1", *self._conn_args("postgres")]
        )

    def _setup(self) -> None:
        self.create_database(self.database)

    def _conn_args(self, database: str) -> list[str]:
        # With a password, TCP wants it: the tools take the trusted socket instead.
        host = HOST if self.password is None else str(self.dir)
        return ["-h", host, "-p", str(self.port), "-U", "postgres", "-d", database]

    def sql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser in ``database``; returns psql's unaligned output."""
        psql = [str(self._bin / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"]
        return self._run_tool([*psql, "-c", sql, *self._conn_args(database)])

    def _psql(self, sql: str) -> str:
        return self._run_tool(
            [
                str(self._bin / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
                *self._conn_args("postgres"),
            ]
        )


class MariaDBServer(_Server):
    """A private MariaDB (or MySQL-compatible) server; root has no password over TCP."""

    name = "mariadb"
    database = "warrantysync"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"mysql+asyncmy://root@{HOST}:{self.port}/{database}?charset=utf8mb4"

    def create_database(self, name: str) -> str:
        """Create an empty utf8mb4 database and return its SQLAlchemy URL."""
        self._run_tool(
            self._client(
                f"CREATE DATABASE `{_checked_name(name)}` "
                "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
            )
        )
        return self.url_for(name)

    def sql(self, sql: str) -> str:
        """Run ``sql`` as root; returns the client's tab-separated output."""
        return self._run_tool(self._client(sql))

    def down(self) -> None:
        """Stop it, keeping its port and data; ``up()`` starts it again."""
        self._terminate()

    def up(self) -> None:
        self._launch()

    @property
    def _data(self) -> Path:
        return self.dir / "data"

    def _user_args(self) -> list[str]:
        # mariadbd refuses to run as root unless told to; the dir is ours anyway.
        return ["--user=root"] if _is_root() else []

    def _prepare(self) -> None:
        self._run_tool(
            [
                _require("mariadb-install-db", "mysql_install_db"),
                "--no-defaults",
                f"--datadir={self._data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                *self._user_args(),
            ]
        )

    def _command(self) -> list[str]:
        return [
            _require("mariadbd", "mysqld"),
            "--no-defaults",
            *self._user_args(),
            f"--datadir={self._data}",
            f"--socket={self.dir / 'mariadbd.sock'}",
            f"--pid-file={self.dir / 'mariadbd.pid'}",
            f"--port={self.port}",
            f"--bind-address={HOST}",
            "--skip-name-resolve",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_unicode_ci",
            "--innodb-flush-log-at-trx-commit=0",
            "--innodb-doublewrite=0",
            "--innodb-use-native-aio=0",
            "--max-connections=300",
        ]

    def _answers(self) -> bool:
        return self._answers_tool(self._client("SELECT 1"))

    def _setup(self) -> None:
        self.create_database(self.database)

    def _client(self, sql: str) -> list[str]:
        return [
            _require("mariadb", "mysql"),
            "--no-defaults",
            "--protocol=TCP",
            f"--host={HOST}",
            f"--port={self.port}",
            "--user=root",
            "--connect-timeout=1",
            "--batch",
            "--execute",
            sql,
        ]


def _checked_name(name: str) -> str:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name
