"""A real warrantysync server in a subprocess, and an SSE reader for tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from servers import free_port
from warrantysync.jsonutil import loads

# Events that come and go beside what a test waits for: heartbeats, who is
# viewing and where, lock renewals (docs/protocol.md, "The event stream"). A
# test that wants one asks for it by name.
NEWS = frozenset({"heartbeat", "presence", "row-presence", "lock-renewed"})


class LiveServer:
    """``warrantysync serve`` on a free loopback port, stopped by its own pid."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
        nofile: tuple[int, int] | None = None,
        workers: int = 1,
    ) -> None:
        self.env = env
        self.port = port or free_port()
        self.log_path = log_path
        self.workers = workers
        self.nofile = nofile  # (soft, hard) RLIMIT_NOFILE for the server process
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> LiveServer:
        env = {**os.environ, **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "warrantysync",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if self.nofile is None else self._limit_descriptors,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout}s:\n{self.log()}")

    def _limit_descriptors(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, self.nofile)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Received:
    event: str
    id: str
    data: Any


class EventReader:
    """Reads one SSE stream in the background; tests await the events they expect."""

    def __init__(self, http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None):
        self.http = http
        self.path = path
        self.headers = headers or {}
        self.queue: asyncio.Queue[Received | None] = asyncio.Queue()
        self.status: int | None = None
        self.closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._opened = asyncio.Event()

    async def _run(self) -> None:
        try:
            async with aconnect_sse(self.http, "GET", self.path, headers=self.headers) as source:
                self.status = source.response.status_code
                self._opened.set()
                if self.status != 200:
                    await source.response.aread()
                    return
                async for sse in source.aiter_sse():
                    if not sse.data and sse.event == "message":
                        continue  # a bare `retry:` block: browsers dispatch nothing either
                    data = loads(sse.data) if sse.data else None
                    await self.queue.put(Received(sse.event, sse.id, data))
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()
            self.closed.set()
            await self.queue.put(None)

    async def start(self, timeout: float = 10.0) -> EventReader:
        self._task = asyncio.get_running_loop().create_task(self._run())
        await asyncio.wait_for(self._opened.wait(), timeout)
        return self

    async def next(
        self, *kinds: str, timeout: float = 10.0, skip: tuple[str, ...] = ()
    ) -> Received:
        """The next event of one of ``kinds``; those in ``skip`` or ``NEWS`` are dropped."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise TimeoutError(f"no {kinds} event within {timeout}s")
            item = await asyncio.wait_for(self.queue.get(), remaining)
            if item is None:
                raise EOFError(f"stream closed while waiting for {kinds}")
            if not kinds or item.event in kinds:
                return item
            if item.event not in skip and item.event not in NEWS:
                raise AssertionError(f"expected {kinds}, got {item.event}: {item.data}")

    async def drain(self, quiet: float = 0.3) -> list[Received]:
        items: list[Received] = []
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), quiet)
            except TimeoutError:
                return items
            if item is None:
                return items
            items.append(item)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


@contextlib.asynccontextmanager
async def reading(
    http: httpx.AsyncClient,
    path: str,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 10.0,
) -> AsyncIterator[EventReader]:
    reader = await EventReader(http, path, headers).start(timeout)
    try:
        yield reader
    finally:
        await reader.close()
