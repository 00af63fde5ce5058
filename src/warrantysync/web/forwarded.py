"""The URL the browser used, for a request that reached us through a proxy.

The Origin check (``web/deps.py``) compares the browser's ``Origin`` with
this request's scheme and ``Host``; the session cookie is ``Secure`` when the
scheme is https (``web/security.py``). Behind a proxy both describe the
proxy's own connection to the node unless the proxy says what the browser
used, and that is believed only from a peer listed in
``WARRANTYSYNC_TRUSTED_PROXIES``:

* ``X-Forwarded-For`` and ``X-Forwarded-Proto`` set the client address and the
  scheme (uvicorn's ``ProxyHeadersMiddleware`` does that part, wrapped here);
* ``X-Forwarded-Host`` replaces ``Host``: its last value, the one the nearest
  proxy set, if it is a plain ``host[:port]``. A proxy's ``Host`` often lacks
  the port (nginx's ``$host`` has none), so on any port but 443 the origin it
  implies is not the browser's (docs/deployment.md, "4. nginx").

``WARRANTYSYNC_PUBLIC_URL``, when set, is the scheme and host of every
request, whatever the headers say: for proxies that send none of these, or a
chain of proxies whose hops the node cannot tell apart.

This runs first, before the per-IP limit and everything else. Uvicorn's own
proxy-header support is off (``server.py``): it would have replaced the
client address before this could see which peer sent the headers.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

# host or [IPv6], then an optional port; nothing else a browser's Host can hold.
_HOST = re.compile(rb"(?:[A-Za-z0-9_.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")


def forwarded_host(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The last ``X-Forwarded-Host`` value, or None when absent or not a plain host."""
    values = [value for name, value in headers if name == b"x-forwarded-host"]
    if not values:
        return None
    last = b",".join(values).rsplit(b",", 1)[-1].strip()
    return last if _HOST.fullmatch(last) else None


def with_host(headers: list[tuple[bytes, bytes]], host: bytes) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in headers if name != b"host"] + [(b"host", host)]


class ForwardedHeaders:
    """Pure ASGI middleware: scheme, ``Host`` and client as the browser and proxy saw them."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        trusted_proxies: list[str],
        public_url: tuple[str, str] | None = None,
    ) -> None:
        """``public_url`` is ``(scheme, host[:port])`` of ``WARRANTYSYNC_PUBLIC_URL``."""
        self.app = app
        self.public = (public_url[0], public_url[1].encode("ascii")) if public_url else None
        inner: Any = self._as_public if self.public else app
        self.proxy_headers = ProxyHeadersMiddleware(inner, trusted_hosts=trusted_proxies)
        self.trusted = self.proxy_headers.trusted_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        if self.public is None and client is not None and client[0] in self.trusted:
            host = forwarded_host(scope["headers"])
            if host is not None:
                scope["headers"] = with_host(scope["headers"], host)
        # uvicorn's ASGI types and Starlette's do not line up for mypy (as in server.py).
        await self.proxy_headers(scope, receive, send)  # type: ignore[arg-type]

    async def _as_public(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert self.public is not None
        scope["scheme"] = self.public[0]
        scope["headers"] = with_host(scope["headers"], self.public[1])
        await self.app(scope, receive, send)
