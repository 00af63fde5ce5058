"""Request dependencies: services, the caller, CSRF/Origin, the raw JSON body.

Checks run in the order docs/protocol.md gives for PATCH — 401, then 403 for
CSRF/Origin, then 413, then 415 — so each route lists them in that order and
does the rest (404, role, rate limit, idempotency, body) itself.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError
from starlette.requests import ClientDisconnect

from ..container import Services
from ..errors import (
    CsrfFailed,
    NotAuthenticated,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from ..ids import ID_RULE, parse_id
from ..services.accounts import Principal

SESSION_COOKIE = "warrantysync_session"
MAX_BODY = 64 * 1024
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _ascii_id(value: object) -> object:
    if isinstance(value, str):
        parsed = parse_id(value)
        if parsed is None:
            raise PydanticCustomError("id", ID_RULE)
        return parsed
    return value


# An id in a path or query: ASCII digits only (warrantysync/ids.py), else 422
# naming the parameter. A plain `int` would also take "+5", " 5" and "5.0".
Id = Annotated[int, BeforeValidator(_ascii_id)]


async def get_services(request: Request) -> Services:
    # async on purpose: FastAPI runs a plain `def` dependency in its thread
    # pool, a thread hop on every request for one attribute lookup.
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def optional_principal(request: Request, services: ServicesDep) -> Principal | None:
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None:
        return cached
    return await _find_principal(request, services)


def _credential(request: Request) -> tuple[str, bool] | None:
    """The request's credential and whether it is a bearer token (else the session cookie)."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip(), True
    if token := request.cookies.get(SESSION_COOKIE):
        return token, False
    return None


async def _find_principal(request: Request, services: Services) -> Principal | None:
    principal: Principal | None = None
    credential = _credential(request)
    if credential is not None:
        token, bearer = credential
        if bearer:
            principal = await services.accounts.from_bearer(token)
        else:
            principal = await services.accounts.from_cookie(token)
            if principal is not None and principal.refreshed:
                request.state.refresh_session_cookie = token  # see web/security.py
    request.state.principal = principal
    return principal


async def current_principal(
    principal: Annotated[Principal | None, Depends(optional_principal)],
) -> Principal:
    if principal is None:
        raise NotAuthenticated("sign in first")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]


def own_origin(request: Request) -> str:
    """Scheme and ``Host`` as ``web/forwarded.py`` left them: what the browser used."""
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"


def check_origin(request: Request, services: Services) -> None:
    origin = request.headers.get("origin")
    own = own_origin(request)
    if origin is None or origin == own:
        return
    if origin in services.settings.allowed_origins:
        return
    # Naming our own origin makes a proxy that loses the port or the scheme
    # obvious from the first refused login.
    raise CsrfFailed(
        f"requests from the origin {origin[:200]!r} are not allowed; this server's own"
        f" origin is {own[:200]!r} (behind a proxy, see WARRANTYSYNC_TRUSTED_PROXIES and"
        " WARRANTYSYNC_PUBLIC_URL)"
    )


async def checked_writer(
    request: Request, principal: CurrentUser, services: ServicesDep
) -> Principal:
    """The caller of a state-changing request, after the CSRF and Origin checks."""
    if request.method in UNSAFE and principal.uses_cookie:
        check_origin(request, services)
        sent = request.headers.get("x-csrf-token", "")
        assert principal.csrf_token is not None
        if not hmac.compare_digest(sent.encode(), principal.csrf_token.encode()):
            raise CsrfFailed("missing or wrong X-CSRF-Token header")
    return principal


Writer = Annotated[Principal, Depends(checked_writer)]


@dataclass(frozen=True, slots=True)
class Save:
    """A save's caller and body (``SaveDep``), through the checks of ``json_body``.

    ``remembered``: the caller came from ``Accounts.remembered``, unchecked
    until the save's write transaction confirms it (services/passes.py).
    """

    principal: Principal
    raw: bytes
    remembered: bool
    pass_key: str | None


async def save_of(request: Request) -> Save:
    """``json_body`` for the save, with the caller remembered from an earlier request.

    One dependency instead of five: a save is the request made most often.
    """
    services: Services = request.app.state.services
    principal, key = _remembered(request, services)
    remembered = principal is not None
    if principal is None:
        principal = await fresh_writer(request, services)
    else:
        await checked_writer(request, principal, services)
    raw = await read_body(request)
    require_json(request)
    return Save(principal, raw, remembered, key)


async def fresh_writer(request: Request, services: Services) -> Principal:
    """``checked_writer``'s caller read from the database, past any memory of it."""
    principal = await _find_principal(request, services)
    request.state.principal = principal
    if principal is None:
        raise NotAuthenticated("sign in first")
    return await checked_writer(request, principal, services)


def _remembered(request: Request, services: Services) -> tuple[Principal | None, str | None]:
    credential = _credential(request)
    if credential is None:
        return None, None
    token, bearer = credential
    # One HMAC per save: the key both finds the memory and forgets it.
    key = services.accounts.pass_key(token, bearer=bearer)
    return services.accounts.remembered(key), key


SaveDep = Annotated[Save, Depends(save_of)]


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, through the one cap every route reads it by.

    413 as soon as the body is known to pass ``limit`` — from its declared
    ``Content-Length`` before reading a byte, or while counting a chunked one
    — without reading the rest. A route that takes no body never calls this,
    so it never reads one; the connection's protocol (warrantysync/httpguard.py)
    then closes the connection instead of reading on. FastAPI would read a
    declared body parameter whole before any check, so no route declares one
    (tests/security/test_security_body.py keeps it so).
    """
    refuse_declared_body(request, limit)
    too_large = PayloadTooLarge(f"request body is larger than {limit // 1024} KiB")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # Gone, or cut off by the body deadline: the answer reaches nobody.
        raise RequestTimeout("the request body did not arrive") from None
    return b"".join(chunks)


def refuse_declared_body(request: Request, limit: int = MAX_BODY) -> None:
    """413 when the body's declared ``Content-Length`` passes ``limit``; reads nothing.

    A route that checks more before reading its body (the CSV import: the
    caller's role) calls this first, so a declared oversize is refused at once.
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise PayloadTooLarge(f"request body is larger than {limit // 1024} KiB")


def require_json(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise UnsupportedMediaType("send the body as application/json")


async def json_body(request: Request, _writer: Writer) -> bytes:
    """The raw body of a write: at most 64 KiB (413), declared as JSON (415)."""
    raw = await read_body(request)
    require_json(request)
    return raw


RawJson = Annotated[bytes, Depends(json_body)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
