"""The ``text/event-stream`` response: one stream's frames onto the socket.

Modelled on sse-starlette's ``EventSourceResponse`` (a writer plus a
disconnect watcher; whichever ends first ends the other), with deliberate
divergences for fan-out at scale (issue 7, ``docs/performance.md``):

* no ping task per stream — heartbeats are real ``heartbeat`` events pushed
  by one process-wide timer, because SSE comments never reach EventSource
  listeners and the client's watchdog must see them;
* frames arrive already encoded (once per event, shared by all streams);
* each queued write has a send timeout: a client whose socket stops draining
  is cut off instead of pinning memory (uvicorn's ``send`` waits on flow
  control);
* **direct writes under uvicorn's httptools protocol.** Once ``ready`` is
  out, an idle stream hands its subscriber a writer that puts each event's
  pre-chunked bytes straight onto the connection's transport, so a delivery
  is one socket write: no task wake-up, no ASGI ``send`` through the
  middleware chain, no timer. It only writes while uvicorn's flow control
  says the socket takes data and nothing is queued; otherwise frames queue
  and this request's own task sends them through ASGI ``send`` with the
  timeout, as below. Body bytes skip the middlewares, which only touch the
  response start (no compression on this route, DESIGN §4). The same task
  watches for the disconnect by awaiting ``receive()`` itself, so there is no
  watcher task either; the subscriber wakes it by setting the cycle's
  message event. Any other server (h11, the test harnesses) gets the plain
  ASGI path: a watcher task and one ``send`` per batch;
* shutdown does not depend on uvicorn's ``should_exit`` monkeypatching
  (sse-starlette issue #152 and friends): the server's exit handler tells the
  broker, which closes every stream with a ``goodbye`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..services.broker.subscriber import Writer
from ..services.streams import Stream

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]

_HttpToolsCycle: Any
try:
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle as _HttpToolsCycle
except ImportError:  # pragma: no cover - httptools not installed
    _HttpToolsCycle = None


_CYCLE_ATTRIBUTES = (
    "chunked_encoding",
    "scope",
    "transport",
    "flow",
    "disconnected",
    "message_event",
)


class EventStreamResponse(Response):
    """A Starlette ``Response`` only so FastAPI passes it through untouched."""

    def __init__(self, stream: Stream, *, send_timeout: float) -> None:
        self.stream = stream
        self.send_timeout = send_timeout
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.stream.subscriber
        try:
            headers, self.raw_headers = self.raw_headers, []
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            del headers
            cycle = _direct_cycle(receive)
            if cycle is None:
                await self._serve_asgi(receive, send)
            else:
                await self._serve_direct(cycle, receive, send)
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            # The batch stuck in the socket is lost too; a full buffer that
            # closed the stream first has already been counted (close is once).
            sub.close("slow", lost=1)
        except OSError:
            sub.close("disconnected")
        finally:
            sub.writer = None
            sub.poke = None
            await self.stream.close()

    async def _send(self, send: Send, body: bytes) -> None:
        async with asyncio.timeout(self.send_timeout):
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _serve_asgi(self, receive: Receive, send: Send) -> None:
        sub = self.stream.subscriber
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, sub.close))
        try:
            async with contextlib.aclosing(self.stream.frames()) as frames:
                async for chunk in frames:
                    await self._send(send, chunk)
        finally:
            watcher.cancel()

    async def _serve_direct(self, cycle: Any, receive: Receive, send: Send) -> None:
        stream, sub = self.stream, self.stream.subscriber
        opening, live = await stream.opening()
        await self._send(send, opening)
        if not live:
            return
        _slim_down(cycle)
        writer = _writer(cycle)
        sub.poke = cycle.message_event.set
        while True:
            batch, finished = stream.take()
            if batch:
                await self._send(send, batch)
            if finished:
                return
            if sub.queued:
                continue  # more arrived while that send waited for the socket
            sub.writer = writer
            # Not kept in a local: the last message would live as long as the wait.
            if (await receive())["type"] == "http.disconnect":
                sub.close("disconnected")


def _direct_cycle(receive: Receive) -> Any:
    """uvicorn's httptools request cycle behind ``receive``, when direct writes are safe."""
    cycle: Any = getattr(receive, "__self__", None)
    if _HttpToolsCycle is None or type(cycle) is not _HttpToolsCycle:
        return None
    # uvicorn internals, checked rather than assumed: a release that renames
    # them quietly gets the plain ASGI path instead of an AttributeError.
    if not all(hasattr(cycle, name) for name in _CYCLE_ATTRIBUTES):
        return None
    if cycle.chunked_encoding is not True or cycle.scope.get("method") != "GET":
        return None
    return cycle


class SlimEvent:
    """``asyncio.Event``'s behaviour at a fraction of its size.

    An ``asyncio.Event`` allocates a waiter deque (~600 bytes) up front;
    uvicorn gives each connection two (the cycle's ``message_event``, the
    flow control's writable event) that an idle stream keeps for hours.
    This one keeps its waiters in a list made only while someone waits.
    """

    __slots__ = ("_value", "_waiters")

    def __init__(self, value: bool) -> None:
        self._value = value
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for future in self._waiters or ():
                if not future.done():
                    future.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        future = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(future)
        try:
            await future
            return True
        finally:
            waiters.remove(future)
            if not waiters and self._waiters is waiters:
                self._waiters = None


def _slim_down(cycle: Any) -> None:
    """Trade the connection's idle weight for what an hours-long stream needs.

    Called in this request's own task before it first waits, so nobody is
    waiting on the events being replaced. The request headers have been read
    (and the ``Request`` built from them dropped): clearing the list uvicorn
    and the scope share frees them for the stream's lifetime.
    """
    for owner, name in ((cycle, "message_event"), (cycle.flow, "_is_writable_event")):
        old = getattr(owner, name, None)
        if type(old) is asyncio.Event:
            setattr(owner, name, SlimEvent(old.is_set()))
    headers = cycle.scope.get("headers")
    if isinstance(headers, list):
        headers.clear()


def _writer(cycle: Any) -> Writer:
    transport = cycle.transport
    flow = cycle.flow

    def write(chunk: bytes) -> bool:
        if flow.write_paused or cycle.disconnected:
            return False
        transport.write(chunk)
        return True

    return write


async def _watch_disconnect(receive: Receive, close: Callable[[str], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            close("disconnected")
            return
