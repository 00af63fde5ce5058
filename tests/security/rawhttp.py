"""Raw-socket HTTP for attacks no well-behaved client library will make:
bodies that never end, headers that never end, bytes trickled one at a time.
Plus what the attacks are measured by: the server's RSS and descriptors (Linux).
"""

from __future__ import annotations

import os
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path

MIB = 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def connect(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def head(method: str, path: str, port: int, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *headers, "", ""]
    return "\r\n".join(lines).encode("latin-1")


@dataclass
class Outcome:
    """What an attacking connection saw: the answer (if any) and how much it sent."""

    response: bytes
    sent: int
    closed: bool  # the server ended the connection (EOF, reset or broken pipe)

    @property
    def status(self) -> int | None:
        if not self.response.startswith(b"HTTP/1."):
            return None
        return int(self.response.split(b" ", 2)[1])

    @property
    def body(self) -> bytes:
        return self.response.partition(b"\r\n\r\n")[2]

    def header(self, name: str) -> str | None:
        top = self.response.partition(b"\r\n\r\n")[0].decode("latin-1")
        for line in top.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None


def push(
    sock: socket.socket,
    first: bytes,
    *,
    then: bytes = b"",
    total: int = 0,
    deadline: float = 20.0,
) -> Outcome:
    """Send ``first``, then repeat ``then`` up to ``total`` more bytes, reading all along.

    Stops sending as soon as the server answers or closes, the way a browser
    stops uploading when the answer comes early; returns what it read.
    """
    sock.setblocking(False)
    out = bytearray(first)
    remaining, sent = total, 0
    received = bytearray()
    closed = False
    ends = time.monotonic() + deadline
    while time.monotonic() < ends and not _complete(received):
        if not out and remaining > 0 and not received:
            piece = then[:remaining]
            remaining -= len(piece)
            out += piece
        sending = bool(out) and not received
        readable, writable, _ = select.select([sock], [sock] if sending else [], [], 0.5)
        if readable:
            try:
                chunk = sock.recv(65536)
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        elif writable:
            try:
                n = sock.send(out)
            except BlockingIOError:
                continue
            except OSError:
                closed = True
                break
            sent += n
            del out[:n]
    return Outcome(bytes(received), sent, closed)


def _complete(data: bytes | bytearray) -> bool:
    top, sep, body = bytes(data).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in top.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


def wait_closed(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Read until the server closes the connection or ``within`` seconds pass."""
    sock.setblocking(False)
    received = bytearray()
    ends = time.monotonic() + within
    while time.monotonic() < ends:
        readable, _, _ = select.select([sock], [], [], 0.2)
        if not readable:
            continue
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True, bytes(received)
        if not chunk:
            return True, bytes(received)
        received += chunk
    return False, bytes(received)


def trickle(sock: socket.socket, data: bytes, *, every: float, within: float) -> tuple[bool, bytes]:
    """Send ``data`` one byte every ``every`` seconds; True once the server closes."""
    sock.setblocking(False)
    received = bytearray()
    ends = time.monotonic() + within
    for byte in data:
        if time.monotonic() >= ends:
            return False, bytes(received)
        try:
            sock.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return True, bytes(received)
        closed, got = wait_closed(sock, every)
        received += got
        if closed:
            return True, bytes(received)
    closed, got = wait_closed(sock, max(0.0, ends - time.monotonic()))
    return closed, bytes(received + got)
