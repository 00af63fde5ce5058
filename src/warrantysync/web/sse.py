"""The ``text/event-stream`` response: one stream's frames onto the socket.

Modelled on sse-starlette's ``EventSourceResponse`` (a writer plus a
disconnect watcher; whichever ends first ends the other), with deliberate
divergences for fan-out at scale (docs/performance.md, "Optimisations"):

1. No ping task per stream: heartbeats are real ``heartbeat`` events pushed
   by one process-wide timer, because SSE comments never reach EventSource
   listeners and the client's watchdog must see them.
2. Frames arrive already encoded, once per event and shared by all streams.
3. Each write has a send timeout: a client whose socket stops draining is
   cut off instead of pinning memory (uvicorn's ``send`` waits on flow
   control).
4. Under uvicorn's httptools protocol an idle stream is written directly
   into the connection's transport and watches for the disconnect from its
   own task (``web/fastpath.py``); any other server gets the plain ASGI
   path below: a watcher task and one ``send`` per batch.
5. Shutdown does not patch uvicorn's ``should_exit`` to notice the exit:
   the server's exit handler tells the broker, which closes every stream with
   a ``goodbye`` frame (docs/protocol.md, "The event stream").

The stream is counted, subscribed and cleaned up by ``async with stream``
around this response (``web/lane.py``); the response only writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..services.streams import Stream
from . import fastpath

log = logging.getLogger(__name__)

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]
OFF = "turned off (WARRANTYSYNC_FAST_PATHS)"


class EventStreamResponse(Response):
    """A Starlette ``Response`` only so FastAPI passes it through untouched."""

    def __init__(self, stream: Stream, *, send_timeout: float, direct: bool = True) -> None:
        self.stream = stream
        self.send_timeout = send_timeout
        self.direct = direct  # may write into uvicorn's transport (web/fastpath.py)
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.stream.subscriber
        try:
            headers, self.raw_headers = self.raw_headers, []
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            del headers
            cycle, why_not = fastpath.direct_cycle(receive) if self.direct else (None, OFF)
            self._note_path(why_not)
            if cycle is None:
                await self._serve_asgi(receive, send)
            else:
                await fastpath.serve(self, cycle, receive, send)
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

    def _note_path(self, why_not: str) -> None:
        """Say which path runs, in ``warrantysync_transport_info`` and, when it changes, the log."""
        path = fastpath.ASGI if why_not else fastpath.DIRECT
        if not self.stream.broker.metrics.set_transport(stream=path):
            return
        if not why_not:
            log.info("event streams: direct writes into uvicorn's transport (web/fastpath.py)")
        elif self.direct and why_not.startswith("uvicorn"):
            log.warning("event streams: plain ASGI sends, the fast path is unusable: %s", why_not)
        else:
            log.info("event streams: plain ASGI sends: %s", why_not)

    async def send_body(self, send: Send, body: bytes) -> None:
        async with asyncio.timeout(self.send_timeout):
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _serve_asgi(self, receive: Receive, send: Send) -> None:
        sub = self.stream.subscriber
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, sub.close))
        try:
            async with contextlib.aclosing(self.stream.frames()) as frames:
                async for chunk in frames:
                    await self.send_body(send, chunk)
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Receive, close: Callable[[str], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            close("disconnected")
            return
