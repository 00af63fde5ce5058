"""Peer: python-socketio ``AsyncServer`` on uvicorn (the seed's rejected alternative).

Every client joins the default namespace; ``POST /publish`` emits one
``case-updated`` event to all of them.
"""

from __future__ import annotations

import json
import sys

import socketio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])


async def publish(request: Request) -> Response:
    await sio.emit("case-updated", json.loads(await request.body()))
    return PlainTextResponse("ok")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


web = Starlette(routes=[Route("/publish", publish, methods=["POST"]), Route("/healthz", healthz)])
app = socketio.ASGIApp(sio, other_asgi_app=web)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        ws="websockets",
        log_level="warning",
    )
