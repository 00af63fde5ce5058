"""A cheap load generator: thousands of SSE (or Socket.IO) clients in one process.

Raw ``asyncio.Protocol`` connections on uvloop; each ``data_received`` only
counts bytes and scans complete lines for the few things the benchmark needs:
``event: ready``, the edit marker ``"notes":"m<seq>`` (receipt time from
``time.time()``: everything runs on one machine) and heartbeats (their
``server_time`` gives the lateness). Commands arrive as JSON lines on stdin,
answers leave as JSON lines on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from typing import Any, cast

MARK = b'"notes":"m'
READY = (b"event: ready", b"event:ready")
BEAT = b"event: heartbeat"
SERVER_TIME = b'"server_time":'
OPEN_TIMEOUT = 60.0


class Stats:
    def __init__(self) -> None:
        self.bytes = 0
        self.arrivals: dict[int, list[float]] = {}

    def reset(self) -> None:
        self.bytes = 0
        self.arrivals = {}


STATS = Stats()


class Conn(asyncio.Protocol):
    """One client. ``kind`` is ``sse`` or ``sio`` (Engine.IO 4 over a raw websocket)."""

    def __init__(self, request: bytes, kind: str) -> None:
        self.request = request
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.head = True
        self.buf = b""
        self.beats = 0
        self.late = 0.0
        self.closed = False
        self.status = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_result(False)

    def data_received(self, data: bytes) -> None:
        STATS.bytes += len(data)
        buf = self.buf + data if self.buf else data
        if self.head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self.buf = buf
                return
            self.status = buf[9:12]
            if self.status not in (b"200", b"101"):
                self.ready.set_result(False)
                assert self.transport is not None
                self.transport.close()
                return
            self.head = False
            buf = buf[end + 4 :]
        if self.kind == "sio":
            self.buf = self._ws_frames(buf)
        else:
            cut = buf.rfind(b"\n") + 1
            self.buf = buf[cut:]
            if cut:
                self._scan(buf[:cut])

    def _scan(self, text: bytes) -> None:
        now = time.time()
        start = text.find(MARK)
        while start >= 0:
            begin = start + len(MARK)
            end = begin
            while 48 <= text[end] <= 57:
                end += 1
            STATS.arrivals.setdefault(int(text[begin:end]), []).append(now)
            start = text.find(MARK, end)
        if not self.ready.done() and (READY[0] in text or READY[1] in text):
            self.ready.set_result(True)
        start = text.find(BEAT)
        while start >= 0:
            self.beats += 1
            at = text.find(SERVER_TIME, start)
            if at >= 0:
                begin = at + len(SERVER_TIME)
                end = begin
                while text[end] not in b",}":
                    end += 1
                self.late = max(self.late, now - float(text[begin:end]))
            start = text.find(BEAT, start + len(BEAT))

    # -- websocket (server frames are never masked) ---------------------------------

    def _ws_frames(self, buf: bytes) -> bytes:
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            size = buf[1] & 0x7F
            at = 2
            if size == 126:
                if len(buf) < 4:
                    break
                size, at = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                if len(buf) < 10:
                    break
                size, at = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < at + size:
                break
            self._ws_message(opcode, buf[at : at + size])
            buf = buf[at + size :]
        return buf

    def _ws_message(self, opcode: int, payload: bytes) -> None:
        if opcode == 9:
            self._ws_send(payload, opcode=10)
        elif opcode == 1:
            if payload[:1] == b"0":
                self._ws_send(b"40")
            elif payload[:2] == b"40":
                if not self.ready.done():
                    self.ready.set_result(True)
            elif payload == b"2":
                self.beats += 1
                self._ws_send(b"3")
            elif payload[:2] == b"42":
                self._scan(payload)

    def _ws_send(self, payload: bytes, opcode: int = 1) -> None:
        assert len(payload) < 126 and self.transport is not None
        # A zero mask key is valid framing and keeps the payload as is.
        header = bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0"
        self.transport.write(header + payload)


class Generator:
    def __init__(self, host: str, port: int, kind: str) -> None:
        self.host = host
        self.port = port
        self.kind = kind
        self.conns: list[Conn] = []
        self.serial = 0

    def _request(self, path: str, headers: dict[str, str]) -> bytes:
        self.serial += 1
        lines = [f"GET {path.replace('{n}', f'{os.getpid()}-{self.serial}')} HTTP/1.1"]
        lines.append(f"Host: {self.host}:{self.port}")
        if self.kind == "sio":
            key = base64.b64encode(os.urandom(16)).decode()
            lines += [
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            ]
        else:
            lines.append("Accept: text/event-stream")
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def open(
        self, n: int, path: str, headers: dict[str, str], parallel: int
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(parallel)
        failed: dict[str, int] = {}

        async def one() -> None:
            async with gate:
                conn = Conn(self._request(path, headers), self.kind)
                try:
                    await loop.create_connection(lambda: conn, self.host, self.port)
                    async with asyncio.timeout(OPEN_TIMEOUT):
                        ok = await conn.ready
                except (OSError, TimeoutError) as exc:
                    failed[type(exc).__name__] = failed.get(type(exc).__name__, 0) + 1
                    if conn.transport is not None:
                        conn.transport.close()
                    return
                if ok:
                    self.conns.append(conn)
                else:
                    key = f"status {conn.status.decode() or 'closed'}"
                    failed[key] = failed.get(key, 0) + 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(n)))
        return {"opened": len(self.alive()), "failed": failed, "secs": time.monotonic() - started}

    def alive(self) -> list[Conn]:
        return [c for c in self.conns if not c.closed]

    def reset(self) -> dict[str, Any]:
        STATS.reset()
        for conn in self.conns:
            conn.beats = 0
            conn.late = 0.0
        return {"ok": True}

    def stats(self) -> dict[str, Any]:
        alive = self.alive()
        return {
            "alive": len(alive),
            "bytes": STATS.bytes,
            "beats": sum(c.beats for c in alive),
            "min_beats": min((c.beats for c in alive), default=0),
            "max_late": max((c.late for c in alive), default=0.0),
            "deliveries": sum(len(v) for v in STATS.arrivals.values()),
        }

    def latencies(self, sends: dict[str, float]) -> dict[str, Any]:
        out: list[float] = []
        missing = 0
        alive = len(self.alive())
        for seq, sent in sends.items():
            got = STATS.arrivals.get(int(seq), [])
            missing += max(0, alive - len(got))
            out.extend(round((t - sent) * 1000, 3) for t in got)
        return {"ms": out, "missing": missing}

    def close(self) -> dict[str, Any]:
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
        self.conns = []
        return {"ok": True}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--kind", choices=["sse", "sio"], default="sse")
    args = parser.parse_args()
    gen = Generator(args.host, args.port, args.kind)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        name = command.pop("cmd")
        if name == "exit":
            break
        if name == "open":
            answer = await gen.open(**command)
        else:
            answer = getattr(gen, name)(**command)
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    gen.close()


def run() -> None:
    factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        factory = uvloop.new_event_loop
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


if __name__ == "__main__":
    run()
