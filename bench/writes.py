"""Saves as the browser sends them, from a generator that costs far less than the server.

Each editor is its own user (editor role in the branch) logged in through
``POST /api/auth/login``: its ``PATCH /api/cases/{id}`` carries the session
cookie, ``X-CSRF-Token``, a new ``Idempotency-Key`` (a uuid) and
``expected`` (the value it replaces), on its own case, over one keep-alive
HTTP/1.1 connection. On two cores the generator shares the CPU with the
server, so the hot loop is a raw ``asyncio.Protocol`` per connection (like
``loadgen.py``'s streams): the constant headers are bytes built once, a save
only appends its key and body, and the answer is parsed just far enough to
know its status and where it ends. Setup (users, logins, cases) uses the CLI
and httpx; it is not measured.

* ``closed_loop``: every editor keeps one save in flight (saturation).
* ``paced``: saves on a fixed schedule (open loop) through a pool of idle
  editors, latency from the *scheduled* send time, so a slow answer shows as
  latency instead of silently delaying the schedule.

Every answer other than a 200 is counted as an error and reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
from common import HOST, cpu_seconds, percentile

PASSWORD = "bench-password-12"
BEHIND_S = 2.0  # paced: how far behind its schedule a run may fall
ANSWER_S = 30.0  # paced: how long the last saves may take to answer


def parse_response(buf: bytes) -> tuple[int, int, int] | None:
    """``(status, body_start, length)`` of the first complete HTTP/1.1 response in ``buf``.

    None while it is incomplete. ``length`` is how many bytes of ``buf`` the
    response takes. Bodies are framed by ``Content-Length`` or chunked (then
    the body is left in its chunked framing); neither means no body (a 204).
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    status = int(buf[9:12])
    head = buf[:end].lower()
    at = head.find(b"\r\ncontent-length:")
    if at >= 0:
        stop = head.find(b"\r\n", at + 2)
        size = int(head[at + 17 : stop if stop >= 0 else end])
        total = end + 4 + size
        return (status, end + 4, total) if len(buf) >= total else None
    if b"\r\ntransfer-encoding: chunked" not in head:
        return status, end + 4, end + 4
    pos = end + 4
    while True:
        line = buf.find(b"\r\n", pos)
        if line < 0:
            return None
        size = int(buf[pos:line].split(b";", 1)[0], 16)
        pos = line + 2 + size + 2
        if len(buf) < pos:
            return None
        if size == 0:
            return status, end + 4, pos


class Conn(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the server"))

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        parsed = parse_response(self.buf)
        if parsed is None:
            return
        status, body, length = parsed
        answer = (status, self.buf[body:length])
        self.buf = self.buf[length:]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(answer)

    def send(self, request: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self.waiter


@dataclass
class Tally:
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def error(self, what: str, count: int = 1) -> None:
        self.errors[what] = self.errors.get(what, 0) + count


class Editor:
    """One user's session on its own case, saving the ``notes`` field."""

    def __init__(self, port: int, case_id: int, cookie: str, csrf: str, n: int) -> None:
        self.port = port
        self.n = n
        self.case_id, self.cookie, self.csrf = case_id, cookie, csrf
        self.head = (
            f"PATCH /api/cases/{case_id} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Cookie: warrantysync_session={cookie}\r\nX-CSRF-Token: {csrf}\r\n"
            f"X-Client-Id: editor-{n}\r\nContent-Type: application/json\r\n"
            "Idempotency-Key: "
        ).encode()
        self.confirmed = b""  # the value the server last confirmed
        self.saves = 0
        self.conn: Conn | None = None

    async def _connection(self) -> Conn:
        if self.conn is None or self.conn.closed:
            loop = asyncio.get_running_loop()
            _, conn = await loop.create_connection(Conn, HOST, self.port)
            self.conn = conn
        return self.conn

    def request(self, value: bytes) -> bytes:
        body = b'{"changes":{"notes":"%s"},"expected":{"notes":"%s"}}' % (value, self.confirmed)
        key = str(uuid.uuid4()).encode()
        return b"%s%s\r\nContent-Length: %d\r\n\r\n%s" % (self.head, key, len(body), body)

    async def save(self, value: bytes, tally: Tally) -> bool:
        try:
            conn = await self._connection()
            status, _ = await conn.send(self.request(value))
        except (OSError, ConnectionError) as exc:
            tally.error(type(exc).__name__)
            return False
        if status != 200:
            tally.error(f"status {status}")
            return False
        self.confirmed = value
        tally.ok += 1
        return True

    def value(self) -> bytes:
        self.saves += 1
        return b"e%d-%d" % (self.n, self.saves)

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()


class Answer:
    """What ``typing_sim.Typist`` reads of an httpx response."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status_code = status
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


class SessionHttp:
    """The few httpx calls ``typing_sim.Typist`` makes, over an editor's connection."""

    def __init__(self, editor: Editor) -> None:
        self.editor = editor
        self.auth = (
            f"Host: {HOST}:{editor.port}\r\nCookie: warrantysync_session={editor.cookie}\r\n"
            f"X-CSRF-Token: {editor.csrf}\r\n"
        ).encode()
        self.lock = asyncio.Lock()  # one request in flight per connection

    async def request(
        self, method: str, url: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        body = b"" if json_body is None else json.dumps(json_body).encode()
        lines = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        kind = "Content-Type: application/json\r\n" if body else ""
        request = (
            f"{method} {url} HTTP/1.1\r\n".encode()
            + self.auth
            + f"{lines}{kind}Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        async with self.lock:
            try:
                conn = await self.editor._connection()
                status, answer = await conn.send(request)
            except (OSError, ConnectionError) as exc:
                raise httpx.TransportError(repr(exc)) from exc
        return Answer(status, answer)

    async def put(self, url: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("PUT", url, headers=headers)

    async def patch(self, url: str, json: Any, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("PATCH", url, json, headers)

    async def delete(self, url: str, headers: dict[str, str] | None = None) -> Answer:
        return await self.request("DELETE", url, headers=headers)


async def closed_loop(editors: list[Editor], secs: float) -> Tally:
    """Each editor saves again as soon as its answer is in, for ``secs``."""
    tally = Tally()
    end = time.perf_counter() + secs

    async def one(editor: Editor) -> None:
        while (start := time.perf_counter()) < end:
            await editor.save(editor.value(), tally)
            tally.latencies_ms.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(one(e) for e in editors))
    return tally


async def paced(editors: list[Editor], rate: float, secs: float) -> Tally:
    """``rate`` saves per second on a fixed schedule; latency from the scheduled time."""
    tally = Tally()
    idle: asyncio.Queue[Editor] = asyncio.Queue()
    for editor in editors:
        idle.put_nowait(editor)
    running: set[asyncio.Task[None]] = set()

    async def one(editor: Editor, due: float) -> None:
        await editor.save(editor.value(), tally)
        tally.latencies_ms.append((time.perf_counter() - due) * 1000)
        idle.put_nowait(editor)

    start = time.perf_counter()
    total = int(rate * secs)
    # A server that cannot keep up would stretch the run without end: saves not
    # sent by then are errors, so such a run cannot pass.
    stop = start + secs + BEHIND_S
    for k in range(total):
        due = start + k / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        # No idle editor means every connection is busy: the wait counts as latency.
        try:
            editor = await asyncio.wait_for(idle.get(), max(0.0, stop - time.perf_counter()))
        except TimeoutError:
            tally.error("not sent: behind schedule", total - k)
            break
        task = asyncio.create_task(one(editor, due))
        running.add(task)
        task.add_done_callback(running.discard)
    if running:
        await asyncio.wait(list(running), timeout=ANSWER_S)
    if running:
        tally.error("no answer", len(running))
    return tally


def summary(tally: Tally, secs: float) -> dict[str, Any]:
    lat = tally.latencies_ms
    return {
        "saves": tally.ok,
        "errors": tally.errors,
        "error_count": sum(tally.errors.values()),
        "saves_per_s": tally.ok / secs,
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "max_ms": max(lat, default=float("nan")),
    }


def measure(
    editors: list[Editor], work: Callable[[], Any], pids: list[int], warm: bool = True
) -> dict[str, Any]:
    """Run ``work()`` (a coroutine factory) on uvloop; server and generator CPU per save.

    ``pids``: the server's processes. The editors' connections live in this
    loop and are closed with it.
    """
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        if warm:
            runner.run(warm_up(editors))
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        own0, wall0 = time.process_time(), time.perf_counter()
        tally: Tally = runner.run(work())
        wall = time.perf_counter() - wall0
        own = time.process_time() - own0
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        close_all(editors)
    result = summary(tally, wall)
    saves = max(1, tally.ok + result["error_count"])
    result.update(
        secs=wall,
        server_cpu_ms_per_save=cpu / saves * 1000,
        generator_cpu_ms_per_save=own / saves * 1000,
    )
    return result


# -- setup (not measured) -------------------------------------------------------------


def make_editors(target: Any, count: int, prefix: str = "editor") -> list[Editor]:
    """``count`` users (editors of the target's branch), logged in, each on a new case."""
    commands = []
    branch = str(target.branch_id)
    for n in range(count):
        email = f"{prefix}{n}@example.com"
        commands.append(
            ["users", "create", "--email", email, "--name", f"Editor {n}", "--password", PASSWORD]
        )
        commands.append(
            ["members", "add", "--email", email, "--branch", branch, "--role", "editor"]
        )
    target.cli_batch(commands)
    cases = [target.create_case(f"Editor {n}'s customer") for n in range(count)]

    def login(n: int) -> Editor:
        with httpx.Client(base_url=target.url, timeout=120) as http:
            answer = http.post(
                "/api/auth/login",
                json={"email": f"{prefix}{n}@example.com", "password": PASSWORD},
            )
            answer.raise_for_status()
            cookie = answer.cookies["warrantysync_session"]
        return Editor(target.port, cases[n], cookie, answer.json()["csrf_token"], n)

    # The server checks passwords in threads: two logins at a time use both cores.
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(login, range(count)))


async def warm_up(editors: list[Editor], saves: int = 3) -> None:
    """A few saves each: connections open, callers remembered, statements cached."""
    tally = Tally()
    for _ in range(saves):
        await asyncio.gather(*(e.save(e.value(), tally) for e in editors))
    if tally.errors:
        raise RuntimeError(f"warm-up saves failed: {tally.errors}")


def close_all(editors: list[Editor]) -> None:
    for editor in editors:
        editor.close()
        editor.conn = None
