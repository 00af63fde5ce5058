"""The ``text/event-stream`` response: one stream's frames onto the socket.

Modelled on sse-starlette's ``EventSourceResponse`` (a writer plus a
disconnect watcher; whichever ends first ends the other), with deliberate
divergences for fan-out at scale:

* no ping task per stream — heartbeats are real ``heartbeat`` events pushed
  by one process-wide timer, because SSE comments never reach EventSource
  listeners and the client's watchdog must see them;
* frames arrive already encoded (once per event, shared by all streams);
* each write has a send timeout: a client whose socket stops draining is cut
  off instead of pinning memory (uvicorn's ``send`` waits on flow control);
* shutdown does not depend on uvicorn's ``should_exit`` monkeypatching
  (sse-starlette issue #152 and friends): the server's exit handler tells the
  broker, which closes every stream with a ``goodbye`` frame.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from ..services.streams import Stream

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"connection", b"keep-alive"),
]


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
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(receive, sub.close))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": self.raw_headers,
                }
            )
            async with contextlib.aclosing(self.stream.frames()) as frames:
                async for chunk in frames:
                    async with asyncio.timeout(self.send_timeout):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.send_timeout):
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            if not sub.closed:  # a full buffer already counted it
                self.stream.broker.metrics.slow_subscriber_disconnects.inc()
            sub.close("slow")
        except OSError:
            sub.close("disconnected")
        finally:
            watcher.cancel()
            await self.stream.close()


async def _watch_disconnect(receive: Receive, close: Callable[[str], None]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            close("disconnected")
            return
