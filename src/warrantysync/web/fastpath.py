"""Direct writes into uvicorn's transport: the event stream's one shortcut through a server.

Once ``ready`` is out, an idle stream served by uvicorn's httptools protocol
hands its subscriber a writer that puts each event's pre-chunked bytes
(``Event.chunk``) straight onto the connection's transport, so a delivery is
one socket write from the broker's loop: no task wake-up, no ASGI ``send``
through the middleware chain, no timer. It only writes while uvicorn's flow
control says the socket takes data and nothing is queued; otherwise frames
queue and the request's own task sends them through ASGI ``send`` with the
send timeout (``web/sse.py``), so a slow client is cut off exactly as on the
plain path. Body bytes skip the middlewares, which only touch the response
start (the stream is never compressed: docs/protocol.md, "The event stream").
The same task watches for the disconnect by awaiting ``receive()`` itself,
so there is no watcher task either; the subscriber wakes it by setting the
cycle's message event.

Why it stays, measured against the plain path and against granian:
docs/performance.md, "Transport fast paths". What it relies on, all of it
uvicorn's and none of it public — ``httptools_impl.RequestResponseCycle``
and its ``chunked_encoding``, ``scope``, ``transport``, ``flow``
(``write_paused``, ``_is_writable_event``), ``disconnected`` and
``message_event`` — is checked on every stream (``direct_cycle``), and
pyproject.toml pins uvicorn below the next minor release. Anything else, or
anything missing, gets the plain path, and ``warrantysync_transport_info``
and the log say which path runs.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from starlette.types import Receive, Send

from ..services.broker.subscriber import Writer

if TYPE_CHECKING:
    from .sse import EventStreamResponse

DIRECT = "direct"
ASGI = "asgi"

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
_FLOW_ATTRIBUTES = ("write_paused", "_is_writable_event")


def direct_cycle(receive: Receive) -> tuple[Any, str]:
    """uvicorn's httptools request cycle behind ``receive`` when direct writes are safe.

    Returns ``(cycle, "")``, or ``(None, why not)``.
    """
    cycle: Any = getattr(receive, "__self__", None)
    if _HttpToolsCycle is None or type(cycle) is not _HttpToolsCycle:
        return None, "the server is not uvicorn with its httptools protocol"
    # Checked rather than assumed: a release that renames them quietly gets the
    # plain ASGI path (and a warning) instead of an AttributeError.
    missing = [name for name in _CYCLE_ATTRIBUTES if not hasattr(cycle, name)]
    missing += [f"flow.{name}" for name in _FLOW_ATTRIBUTES if not hasattr(cycle.flow, name)]
    if missing:
        return None, f"uvicorn's request cycle has no {', '.join(missing)}"
    if cycle.chunked_encoding is not True or cycle.scope.get("method") != "GET":
        return None, "the response is not chunked"
    return cycle, ""


async def serve(response: EventStreamResponse, cycle: Any, receive: Receive, send: Send) -> None:
    """Write the response's stream until it ends: queued batches through ASGI ``send``
    (``response.send_body``, with its timeout), the rest directly."""
    stream = response.stream
    sub = stream.subscriber
    opening, live = await stream.opening()
    await response.send_body(send, opening)
    if not live:
        return
    slim_down(cycle)
    write = writer(cycle)
    sub.poke = cycle.message_event.set
    while True:
        batch, finished = stream.take()
        if batch:
            await response.send_body(send, batch)
        if finished:
            return
        if sub.queued:
            continue  # more arrived while that send waited for the socket
        sub.writer = write
        # Not kept in a local: the last message would live as long as the wait.
        if (await receive())["type"] == "http.disconnect":
            sub.close("disconnected")


def writer(cycle: Any) -> Writer:
    transport = cycle.transport
    flow = cycle.flow

    def write(chunk: bytes) -> bool:
        if flow.write_paused or cycle.disconnected:
            return False
        transport.write(chunk)
        return True

    return write


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


def slim_down(cycle: Any) -> None:
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
