"""The stream lane: the event stream bypasses FastAPI's routing stack.

An open stream is a request that lives for hours, and every ASGI layer it
went through stays suspended on its stack for that long: FastAPI's and
Starlette's middlewares, the router, the route, the dependency solver, three
``AsyncExitStack``s — ~20 frames and ~9 KB per stream (docs/performance.md).
``App`` sends ``GET /api/branches/{id}/events`` straight from its own
``__call__`` to the endpoint (``routes/events.py``), doing by hand the little
the stack did for it: the per-IP limit, the security headers and session
cookie of the edge middlewares, and the error answers of ``web/errors.py``.
Every other request takes the normal way.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from ..container import Services
from ..errors import WarrantySyncError
from ..logs import REQUEST_ID
from .errors import INTERNAL, error_response, json_response
from .requestid import request_id_for
from .routes import events
from .security import edge_headers, ip_refusal, with_edge_headers

log = logging.getLogger(__name__)


class App(FastAPI):
    """FastAPI, with the event stream served on its own lane.

    ``front`` (``web/forwarded.py``) runs before both ways in, so the lane sees
    the browser's address, scheme and host exactly as the routes do. Every HTTP
    request gets its request id first, so the log lines and the
    ``X-Request-Id`` of both ways carry it (``web/requestid.py``).
    """

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        # Before ``front`` rewrites the client: trust is judged by the TCP peer.
        token = REQUEST_ID.set(request_id_for(scope, getattr(self.state, "trusted_peers", None)))
        try:
            if self.front is not None:
                await self.front(scope, receive, send)
            else:
                await self.dispatch(scope, receive, send)
        finally:
            REQUEST_ID.reset(token)

    async def dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "GET":
            services: Services | None = getattr(self.state, "services", None)
            # The branch id only: this frame stays suspended as long as the stream.
            raw_branch_id = _branch_segment(scope)
            if raw_branch_id is not None and services is not None:
                scope["app"] = self
                await _serve(services, raw_branch_id, scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def _serve(
    services: Services, raw_branch_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    ttl = services.settings.session_ttl
    refusal = await ip_refusal(scope, services)
    if refusal is not None:
        await refusal(scope, receive, with_edge_headers(scope, send, ttl))
        return
    entered = False
    try:
        # The Request (and its parsed headers and cookies) is dropped once
        # the stream is open: only the response stays alive.
        response = await events.open_stream(Request(scope, receive), raw_branch_id)
        response.raw_headers = edge_headers(scope, response.raw_headers, session_ttl=ttl)
        # Counted (or refused at the user's cap) and subscribed on entry;
        # unsubscribed and uncounted however the response ends.
        async with response.stream:
            entered = True
            await response(scope, receive, send)
    except Exception as exc:
        if entered:
            raise  # the response has started: nothing left to answer with
        if isinstance(exc, WarrantySyncError):
            await error_response(exc)(scope, receive, with_edge_headers(scope, send, ttl))
            return
        # What the app's last-resort handler answers elsewhere.
        log.exception("unhandled error", exc_info=exc)
        await json_response(500, INTERNAL)(scope, receive, with_edge_headers(scope, send, ttl))


def _branch_segment(scope: Scope) -> str | None:
    """The ``{branch_id}`` of an events path, unparsed; None for any other path."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    found = events.PATH.fullmatch(path[len(root) :] if root and path.startswith(root) else path)
    return None if found is None else found[1]
