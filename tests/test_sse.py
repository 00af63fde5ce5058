"""web/sse.py on its plain ASGI path: a stream that cannot keep up is cut off alone.

Driven in-process through the ASGI app with the real broker and database
(any server but uvicorn's httptools protocol gets this path, web/fastpath.py
the other): the slow client's ``send`` never completes (as a socket whose
peer stopped reading and whose kernel buffers are full), which a loopback
socket would only reach after several megabytes. The same through a real
server and a real socket: tests/faults/test_fault_slow_consumer.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import login, make_settings
from factories import World, seed_world
from warrantysync import create_app
from warrantysync.container import Services


class AsgiStream:
    """Runs one GET of the ASGI app by hand, recording what it sends."""

    def __init__(self, app: Any, path: str, cookie: str, *, stall: bool) -> None:
        self.app = app
        self.path, _, self.query = path.partition("?")
        self.cookie = cookie
        self.stall = stall
        self.body = bytearray()
        self.started = asyncio.Event()
        self._disconnect = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        await self._disconnect.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.started.set()
            return
        if self.stall and self.body:
            await asyncio.Event().wait()  # the socket never drains again
        self.body.extend(message.get("body", b""))

    def start(self) -> AsgiStream:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": self.query.encode(),
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"cookie", self.cookie.encode())],
            "client": ("127.0.0.1", 1234),
            "server": ("testserver", 80),
        }
        self.task = asyncio.get_running_loop().create_task(
            self.app(scope, self._receive, self._send)
        )
        return self

    def count(self, kind: str) -> int:
        return bytes(self.body).count(f"event: {kind}\n".encode())

    async def stop(self) -> None:
        self._disconnect.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 5)


@pytest.fixture
async def small_buffers(db_url: str) -> AsyncIterator[tuple[Any, Services, World]]:
    app = create_app(make_settings(db_url, stream_buffer=8, send_timeout=0.5))
    async with app.router.lifespan_context(app):
        services: Services = app.state.services
        yield app, services, await seed_world(services.db)


async def test_slow_subscriber_is_cut_off_while_a_fast_one_keeps_up(
    small_buffers: tuple[Any, Services, World],
) -> None:
    app, services, world = small_buffers
    branch, case = world.branches["downtown"], world.cases["phone"]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        csrf = await login(http, "alice@example.com")
        cookie = "; ".join(f"{k}={v}" for k, v in http.cookies.items())
        path = f"/api/branches/{branch}/events?client_id="
        fast = AsgiStream(app, path + "fast", cookie, stall=False).start()
        slow = AsgiStream(app, path + "slow", cookie, stall=True).start()
        await asyncio.wait_for(asyncio.gather(fast.started.wait(), slow.started.wait()), 5)
        await asyncio.sleep(0.1)  # both streams are past `ready`
        total = 40
        for n in range(total):
            response = await http.patch(
                f"/api/cases/{case}", json={"changes": {"notes": f"n{n}"}}, headers=csrf
            )
            assert response.status_code == 200
        # The slow stream ends by itself: its handler returns.
        assert slow.task is not None
        await asyncio.wait_for(asyncio.shield(slow.task), 5)
        for _ in range(50):
            if fast.count("case-updated") == total:
                break
            await asyncio.sleep(0.05)
        assert fast.count("case-updated") == total
        assert slow.count("case-updated") < total
        metrics = _samples(services.metrics.render().decode())
        assert metrics["warrantysync_slow_subscriber_disconnects_total"] == 1, metrics
        assert metrics["warrantysync_events_dropped_total"] >= 1, metrics
        assert [sub.client_id for sub in services.broker.subscribers()] == ["fast"]
        await fast.stop()
        await slow.stop()


def _samples(text: str) -> dict[str, float]:
    return {
        line.split()[0]: float(line.split()[-1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
