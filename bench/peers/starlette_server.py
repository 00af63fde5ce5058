"""Peer: what a typical FastAPI/Starlette SSE app looks like.

sse-starlette's ``EventSourceResponse`` per client, an ``asyncio.Queue`` per
client, ``POST /publish`` puts the event in every queue. Same uvicorn
settings as warrantysync (uvloop, httptools).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

clients: set[asyncio.Queue[str]] = set()


async def events(request: Request) -> Response:
    queue: asyncio.Queue[str] = asyncio.Queue()

    async def stream() -> AsyncIterator[dict[str, str]]:
        clients.add(queue)
        try:
            yield {"event": "ready", "data": "{}"}
            while True:
                data = await queue.get()
                yield {"event": "case-updated", "data": data}
        finally:
            clients.discard(queue)

    return EventSourceResponse(stream())


async def publish(request: Request) -> Response:
    data = (await request.body()).decode()
    for queue in clients:
        queue.put_nowait(data)
    return PlainTextResponse("ok")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[
        Route("/events", events),
        Route("/publish", publish, methods=["POST"]),
        Route("/healthz", healthz),
    ]
)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
