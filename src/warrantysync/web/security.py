"""Security headers and the sliding session cookie, as one pure ASGI middleware.

Pure ASGI (not ``BaseHTTPMiddleware``) so the event stream is never buffered
or wrapped in an extra task: the only cost per stream is one header merge
when the response starts.
"""

from __future__ import annotations

import math
from http.cookies import SimpleCookie

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .deps import SESSION_COOKIE

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


class EdgeHeaders:
    """Adds the security headers; re-sets the session cookie when the session slid."""

    def __init__(self, app: ASGIApp, *, session_ttl: float) -> None:
        self.app = app
        self.session_ttl = session_ttl

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", [])) + SECURITY_HEADERS
                token = scope.get("state", {}).get("refresh_session_cookie")
                if token and not any(k == b"set-cookie" for k, _v in headers):
                    secure = scope.get("scheme") == "https"
                    headers.append(
                        session_cookie_header(token, max_age=self.session_ttl, secure=secure)
                    )
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
