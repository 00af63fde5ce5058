"""The one place domain errors become HTTP answers ``{"error", "message", …}``."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import errors as E
from ..jsonutil import dumps

log = logging.getLogger(__name__)
# The first element of a FastAPI validation error's location.
LOCATIONS = frozenset({"body", "path", "query", "header", "cookie"})

INTERNAL = {"error": "internal", "message": "something went wrong"}

STATUS: dict[type[E.WarrantySyncError], int] = {
    E.NotAuthenticated: 401,
    E.InvalidCredentials: 401,
    E.Forbidden: 403,
    E.NotFound: 404,
    E.RequestTimeout: 408,
    E.PayloadTooLarge: 413,
    E.UnsupportedMediaType: 415,
    E.ValidationFailed: 422,
    E.InvalidJson: 422,
    E.IdempotencyKeyReused: 422,
    E.LockConflict: 423,
    E.LockBarred: 423,
    E.LockLost: 409,
    E.StreamRequired: 409,
    E.LockGone: 409,
    E.RequestPending: 409,
    E.StaleVersion: 409,
    E.RateLimited: 429,
    E.Unavailable: 503,
}


def status_of(exc: E.WarrantySyncError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


def body_of(exc: E.WarrantySyncError) -> dict[str, object]:
    return {"error": exc.code, "message": exc.message, **exc.extra}


def json_response(status: int, body: object, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def error_response(exc: E.WarrantySyncError) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, E.RateLimited | E.Unavailable | E.LockBarred):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, E.NotAuthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="warrantysync"'
    return json_response(status_of(exc), body_of(exc), headers)


def install(app: FastAPI) -> None:
    async def domain(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, E.WarrantySyncError)
        return error_response(exc)

    async def http(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_response(
            exc.status_code, {"error": code, "message": str(exc.detail)}, dict(exc.headers or {})
        )

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0] if exc.errors() else {}
        loc = tuple(first.get("loc", ()))
        if loc and loc[0] in LOCATIONS:  # name the parameter, not where it was sent
            loc = loc[1:]
        where = ".".join(str(part) for part in loc)
        message = f"{where}: {first.get('msg', 'invalid')}" if where else "invalid request"
        body = {"error": "validation_error", "message": message, "field": where}
        return json_response(422, {**body, "rule": str(first.get("type", "invalid"))})

    app.add_exception_handler(E.WarrantySyncError, domain)
    app.add_exception_handler(StarletteHTTPException, http)
    app.add_exception_handler(RequestValidationError, invalid)


class LastResort:
    """Any exception nothing else handled: logged once (with the request id), answered 500.

    Not an ``Exception`` handler: Starlette's ``ServerErrorMiddleware`` re-raises
    after calling one, so uvicorn logged every such error a second time.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("unhandled error")
            if not started:  # else the client sees the response cut short
                await json_response(500, INTERNAL)(scope, receive, send)
