"""Tools for the fault suite: raw SSE sockets, process memory, metrics, scale.

Loopback only, every loop bounded. ``WARRANTYSYNC_FAULT_SCALE=long`` (``make
faults``) runs the long versions; the default is the short one ``make test``
runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from factories import PASSWORD
from warrantysync.jsonutil import loads

T = TypeVar("T")
LONG = os.environ.get("WARRANTYSYNC_FAULT_SCALE") == "long"
SESSION_COOKIE = "warrantysync_session"


def scale(short: T, long: T) -> T:
    return long if LONG else short


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Threads for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def metric(base_url: str, name: str, labels: str = "") -> float:
    """One sample of the server's Prometheus text (0 when absent)."""
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}{re.escape(labels)}\s+(\S+)$", re.MULTILINE)
    found = pattern.search(text)
    return float(found.group(1)) if found else 0.0


def raise_nofile(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def case_history(http: httpx.AsyncClient, url: str) -> list[dict[str, Any]]:
    """Every entry of ``url`` (a case's ``…/history``), newest first, following the pages."""
    entries: list[dict[str, Any]] = []
    before: int | None = None
    while True:
        params = {"limit": 500} | ({"before": before} if before else {})
        page: list[dict[str, Any]] = (await http.get(url, params=params)).json()
        entries += page
        if len(page) < 500:
            return entries
        before = page[-1]["id"]


def login_cookie(base_url: str, email: str) -> tuple[str, str]:
    """(session cookie value, csrf token) of a fresh login."""
    response = httpx.post(
        f"{base_url}/api/auth/login", json={"email": email, "password": PASSWORD}, timeout=15
    )
    assert response.status_code == 200, response.text
    return response.cookies[SESSION_COOKIE], response.json()["csrf_token"]


@dataclass
class Frame:
    event: str
    id: str | None
    data: object


@dataclass
class RawStream:
    """One SSE stream on a bare asyncio socket: cheap enough for hundreds at once."""

    port: int
    path: str
    cookie: str
    last_event_id: str | None = None
    status: int = 0
    frames: list[Frame] = field(default_factory=list)
    eof: bool = False
    _reader: asyncio.StreamReader | None = None
    _writer: asyncio.StreamWriter | None = None
    _buffer: bytes = b""  # decoded body not yet parsed into frames
    _raw: bytes = b""  # chunked body not yet decoded
    chunked: bool = False

    async def open(self, *, rcvbuf: int | None = None, timeout: float = 15) -> RawStream:
        if rcvbuf is None:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port), timeout
            )
        else:
            import socket

            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
            self._reader, self._writer = await asyncio.open_connection(sock=sock, limit=rcvbuf)
        extra = f"Last-Event-ID: {self.last_event_id}\r\n" if self.last_event_id else ""
        self._writer.write(
            (
                f"GET {self.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                f"Accept: text/event-stream\r\nCookie: {SESSION_COOKIE}={self.cookie}\r\n"
                f"{extra}\r\n"
            ).encode()
        )
        await self._writer.drain()
        head = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), timeout)
        self.status = int(head.split(b" ", 2)[1])
        self.chunked = b"transfer-encoding: chunked" in head.lower()
        return self

    async def _more(self, timeout: float) -> bool:
        assert self._reader is not None
        data = await asyncio.wait_for(self._reader.read(65536), timeout)
        if not data:
            self.eof = True
            return False
        if not self.chunked:
            self._buffer += data
            return True
        self._raw += data
        while True:  # decode every complete chunk of the transfer encoding
            line_end = self._raw.find(b"\r\n")
            if line_end < 0:
                return True
            size = int(self._raw[:line_end].split(b";")[0], 16)
            if size == 0:
                self.eof = True
                return False
            if len(self._raw) < line_end + 2 + size + 2:
                return True
            start = line_end + 2
            self._buffer += self._raw[start : start + size]
            self._raw = self._raw[start + size + 2 :]

    def _parse(self) -> list[Frame]:
        found: list[Frame] = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            frame = _frame(block.decode("utf-8", "replace"))
            if frame is not None:
                found.append(frame)
                self.frames.append(frame)
        return found

    async def read_until(self, event: str, timeout: float = 15) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            for frame in self._parse():
                if frame.event == event:
                    return frame
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {event} within {timeout}s")
            if not await self._more(remaining):
                for frame in self._parse():
                    if frame.event == event:
                        return frame
                raise EOFError(f"stream ended before {event}")

    async def read_some(self, timeout: float) -> list[Frame]:
        """The next frames to arrive (none: the stream ended); TimeoutError after ``timeout``.

        For a reader that handles frames as they come; it may clear ``frames``
        after handling them, so a long run does not keep them all.
        """
        deadline = time.monotonic() + timeout
        while not (found := self._parse()):
            if self.eof:
                return []
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no frame within {timeout}s")
            if not await self._more(remaining):
                return self._parse()
        return found

    async def read_to_eof(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while not self.eof and await self._more(max(0.01, deadline - time.monotonic())):
            self._parse()
        self._parse()

    def events(self, kind: str) -> list[Frame]:
        return [frame for frame in self.frames if frame.event == kind]

    def last_id(self) -> str | None:
        ids = [frame.id for frame in self.frames if frame.id]
        return ids[-1] if ids else self.last_event_id

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()


def _frame(block: str) -> Frame | None:
    event, event_id, data = "message", None, []
    for line in block.split("\n"):
        line = line.rstrip("\r")
        if not line or line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data.append(value)
    if not data and event == "message":
        return None  # a bare retry: block
    return Frame(event, event_id, loads("\n".join(data)) if data else None)
