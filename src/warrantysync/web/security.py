"""Edge middleware: security headers, the sliding session cookie, the per-IP limit.

Pure ASGI (not ``BaseHTTPMiddleware``) so the event stream is never buffered
or wrapped in an extra task: the only cost per stream is one header merge
when the response starts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from http.cookies import SimpleCookie

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..container import Services
from ..errors import RateLimited
from ..logs import REQUEST_ID
from .deps import SESSION_COOKIE
from .errors import error_response

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


def session_cookie_header(token: str, *, max_age: float, secure: bool) -> tuple[bytes, bytes]:
    cookie: SimpleCookie = SimpleCookie()
    cookie[SESSION_COOKIE] = token
    morsel = cookie[SESSION_COOKIE]
    morsel["max-age"] = max(1, math.ceil(max_age))  # a fractional TTL must not give 0
    morsel["path"] = "/"
    morsel["httponly"] = True
    morsel["samesite"] = "lax"
    if secure:
        morsel["secure"] = True
    return b"set-cookie", morsel.OutputString().encode("latin-1")


def edge_headers(
    scope: Scope, headers: Iterable[tuple[bytes, bytes]], *, session_ttl: float
) -> list[tuple[bytes, bytes]]:
    """A response's headers plus the security headers, the request id and a slid session cookie."""
    merged = list(headers) + SECURITY_HEADERS
    request_id = REQUEST_ID.get()
    if request_id is not None:
        merged.append((b"x-request-id", request_id.encode("ascii")))
    token = scope.get("state", {}).get("refresh_session_cookie")
    if token and not any(k == b"set-cookie" for k, _v in merged):
        secure = scope.get("scheme") == "https"
        merged.append(session_cookie_header(token, max_age=session_ttl, secure=secure))
    return merged


class EdgeHeaders:
    """Adds the security headers; re-sets the session cookie when the session slid."""

    def __init__(self, app: ASGIApp, *, session_ttl: float) -> None:
        self.app = app
        self.session_ttl = session_ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.app(scope, receive, with_edge_headers(scope, send, self.session_ttl))


def with_edge_headers(scope: Scope, send: Send, session_ttl: float) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = edge_headers(
                scope, message.get("headers", []), session_ttl=session_ttl
            )
        await send(message)

    return send_with_headers


# Load balancers probe these, and static files are cheap and cached: the
# per-IP limit would only get in the way there.
IP_LIMIT_EXEMPT = ("/static/", "/healthz", "/readyz", "/metrics")


class PerIpLimit:
    """Counts every other request against ``RATE_LIMIT_IP`` for the client's IP.

    The event stream counts too: connecting is the costliest request (a
    replay), and reconnects after a deploy are already spread by jitter. The
    IP is ``scope["client"]``, which ``web/forwarded.py`` has set to the
    ``X-Forwarded-For`` client when the peer is a trusted proxy.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = await ip_refusal(scope, getattr(scope["app"].state, "services", None))
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def ip_refusal(scope: Scope, services: Services | None) -> Response | None:
    """The 429 for a client IP over ``RATE_LIMIT_IP``, or None to go on."""
    if services is None or not services.limits.limits_ips:
        return None
    if scope["path"].startswith(IP_LIMIT_EXEMPT):
        return None
    client = scope.get("client")
    try:
        await services.limits.hit_ip(client[0] if client else "unknown")
    except RateLimited as exc:
        return error_response(exc)
    return None
