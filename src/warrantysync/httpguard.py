"""Connection limits that uvicorn's httptools protocol lacks.

With httptools, uvicorn caps nothing about a request head (its
``h11_max_incomplete_event_size`` applies to h11 only) and times out nothing
but idle keep-alive connections after a response. So a 16 MiB header was
answered 200, ten connections each sending 20 MiB of unterminated header held
230 MiB, and a connection that trickles its head, its body — or nothing at
all — stayed open for ever. :class:`GuardedHttpToolsProtocol` adds, per
connection (docs/security.md, "Connections"):

* a cap on the request line and headers (``MAX_HEADER_BYTES``): 431 as soon as
  the head is known to pass it, whether or not it ever ends;
* a deadline for the whole head (``HEADER_TIMEOUT``), counted from the
  connection's opening or from the first byte of each later request: 408, or
  a silent close when not a byte came;
* a deadline for the whole body (``BODY_TIMEOUT``), counted from the end of
  the head: 408;
* no reading on for a body the app answered without reading (a 413, a 401, a
  route that takes none): the answer says ``Connection: close`` and the
  connection is closed instead of kept alive (docs/protocol.md, "Requests the
  server refuses before reading them"). Without the header a client may send
  its next request on the connection (RFC 9112, section 9.3) and lose it.

A response, once started, is never cut by these deadlines — the event stream
lives for hours after its request ended. Refusals are written by the protocol
itself, as JSON with the security headers; the connection then half-closes
and drops whatever else arrives for up to ``LINGER`` seconds before closing,
so a client still uploading reads the answer instead of a reset.

Written against uvicorn 0.54 (the hooks overridden here are unchanged since
0.30); pyproject.toml pins that range. :func:`protocol_class` refuses any
other version, and server.py then falls back to uvicorn's h11 protocol with
``h11_max_incomplete_event_size`` (the head cap without the deadlines) and
says so in the log.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .jsonutil import dumps
from .web.security import SECURITY_HEADERS

log = logging.getLogger(__name__)

# The uvicorn versions this module was written and tested against.
SUPPORTED = ((0, 30), (0, 55))  # from (inclusive) .. to (exclusive)
# What the subclass relies on; a uvicorn without any of them is not used.
HOOKS = (
    "connection_made",
    "connection_lost",
    "data_received",
    "on_message_begin",
    "on_url",
    "on_header",
    "on_headers_complete",
    "on_body",
    "on_message_complete",
    "on_response_complete",
)
LIMITS_ATTRIBUTE = "warrantysync_limits"
LINGER = 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0


def supported(version: str) -> bool:
    try:
        major, minor = (int(part) for part in version.split(".")[:2])
    except ValueError:
        return False
    return SUPPORTED[0] <= (major, minor) < SUPPORTED[1]


def protocol_class(uvicorn_version: str | None = None) -> type[asyncio.Protocol] | None:
    """The guarded protocol, or None where it was not written for this uvicorn."""
    version = uvicorn_version or importlib.metadata.version("uvicorn")
    if not supported(version):
        return None
    if any(not callable(getattr(HttpToolsProtocol, name, None)) for name in HOOKS):
        return None
    return GuardedHttpToolsProtocol


def install(config: Config, limits: Limits, *, uvicorn_version: str | None = None) -> None:
    """Serve ``config`` with the guarded protocol, or the safest fallback."""
    version = uvicorn_version or importlib.metadata.version("uvicorn")
    setattr(config, LIMITS_ATTRIBUTE, limits)
    config.timeout_keep_alive = math.ceil(limits.keep_alive_timeout)  # the fallback's
    guarded = protocol_class(version)
    if guarded is not None:
        config.http = guarded
        return
    config.http = "h11"
    config.h11_max_incomplete_event_size = limits.max_header_bytes
    log.warning(
        "warrantysync's connection guard does not run with uvicorn %s: serving with"
        " h11, whose request heads are capped but whose header and body reads have"
        " no deadline",
        version,
    )


def refusal(status: int, code: str, message: str, default_headers: Iterable[Any]) -> bytes:
    """A complete ``Connection: close`` answer, written without the app."""
    body = dumps({"error": code, "message": message})
    reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
    lines = [b"HTTP/1.1 %d %s" % (status, reason)]
    headers = [
        *default_headers,
        *SECURITY_HEADERS,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    lines += [name + b": " + value for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a head cap and read deadlines."""

    def __init__(self, config: Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.limits: Limits = getattr(config, LIMITS_ATTRIBUTE, None) or Limits()
        # uvicorn's own idle keep-alive timer, with the setting's fractions kept.
        self.timeout_keep_alive = self.limits.keep_alive_timeout  # type: ignore[assignment]
        self._awaiting_head = True  # no request is being read
        self._head_begun = False  # a byte of the current head has been parsed
        self._head_bytes = 0  # bytes received while awaiting the current head
        self._deadline: asyncio.TimerHandle | None = None
        self._dropping = False  # refused or lingering: read, but parse nothing more
        self._answered_early = False  # the answer began before the body was read whole
        self.waiting_since = 0.0  # loop time the connection last became idle

    # -- the connection's life ------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.waiting_since = self.loop.time()
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._dropping:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
            if self._deadline is None:
                self._arm(self.limits.header_timeout, self._head_timed_out)
        super().data_received(data)
        if (
            self._awaiting_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self._dropping
            and not self.transport.is_closing()
        ):
            self._refuse_head()

    @property
    def idle(self) -> bool:
        """No request is being read or answered: closing it costs nobody anything."""
        cycle = self.cycle
        return (
            self._awaiting_head
            and not self._dropping
            and (cycle is None or cycle.response_complete)
            and not self.transport.is_closing()
        )

    def close_if_idle(self) -> bool:
        if not self.idle:
            return False
        self.transport.close()
        return True

    # -- parser callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        if self._dropping:
            return
        self._head_begun = True
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._dropping:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._dropping:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._dropping:
            return
        self._disarm()
        self._awaiting_head = False
        self._head_begun = False
        if self._head_size() > self.limits.max_header_bytes:
            self._refuse_head()
            return
        super().on_headers_complete()
        self._arm(self.limits.body_timeout, self._body_timed_out)
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and self._expects_body():
            # Its task has not run yet, so it will look this attribute up.
            cycle.send = functools.partial(self._send, cycle, cycle.send)  # type: ignore[method-assign]

    def on_body(self, body: bytes) -> None:
        if not self._dropping:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._dropping:
            return
        self._disarm()
        super().on_message_complete()
        self._awaiting_head = True
        self._head_bytes = 0

    def on_response_complete(self) -> None:
        cycle = self.cycle
        if (
            cycle is not None
            and cycle.response_complete
            and (cycle.more_body or self._answered_early)
        ):
            # Answered before its body was read: do not read the rest of it just
            # to find the next request (the answer said so, see _send).
            self.server_state.total_requests += 1
            self._linger()
            return
        super().on_response_complete()
        self.waiting_since = self.loop.time()

    # -- answers given before the body ---------------------------------------

    def _expects_body(self) -> bool:
        return any(
            name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0")
            for name, value in self.headers
        )

    async def _send(
        self,
        cycle: Any,
        send: Callable[[Any], Awaitable[None]],
        message: Any,
    ) -> None:
        """The cycle's ASGI ``send``; an answer begun before the body was read
        whole says ``Connection: close``, since the connection ends after it."""
        if message["type"] != "http.response.start" or not cycle.more_body:
            await send(message)
            return
        self._answered_early = True
        keep_alive = cycle.keep_alive
        headers = [(n, v) for n, v in message.get("headers", ()) if n.lower() != b"connection"]
        headers.append((b"connection", b"close"))
        await send({**message, "headers": headers})
        # uvicorn takes the header as "close at once" after the answer, which
        # resets a client still uploading before it reads the answer; the
        # connection lingers instead (on_response_complete).
        cycle.keep_alive = keep_alive

    # -- refusals -------------------------------------------------------------

    def _head_size(self) -> int:
        # The request line ("GET /path HTTP/1.1\r\n") and each "name: value\r\n".
        line = len(self.parser.get_method()) + len(self.url) + 12
        return line + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _refuse_head(self) -> None:
        limit = self.limits.max_header_bytes
        self._refuse(431, "header_too_large", f"the request head is larger than {limit} bytes")

    def _head_timed_out(self) -> None:
        self._deadline = None
        if not self._head_begun and self._head_bytes == 0:
            self.transport.close()  # opened, never used: nobody waits for an answer
            return
        seconds = self.limits.header_timeout
        self._refuse(408, "request_timeout", f"the request head took longer than {seconds:g} s")

    def _body_timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if cycle is None or not cycle.more_body:
            return
        # The app may be waiting for the rest: tell it the client is gone, so
        # its receive() returns and anything it sends is dropped.
        started = cycle.response_started
        cycle.disconnected = True
        cycle.message_event.set()
        if started:
            self.transport.close()
            return
        seconds = self.limits.body_timeout
        self._refuse(408, "request_timeout", f"the request body took longer than {seconds:g} s")

    def _refuse(self, status: int, code: str, message: str) -> None:
        self._disarm()
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            # Another answer is on its way out: nothing can be said in between.
            self._dropping = True
            self.transport.close()
            return
        self.transport.write(refusal(status, code, message, self.server_state.default_headers))
        self._linger()

    def _linger(self) -> None:
        """Half-close, drop what still arrives, close after ``LINGER`` seconds."""
        self._dropping = True
        self._disarm()
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(LINGER, self.transport.close)

    # -- timers ---------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], object]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


def close_idle(connections: Iterable[object], count: int) -> int:
    """Close up to ``count`` idle guarded connections, those idle longest first."""
    idle = sorted(
        (c for c in connections if isinstance(c, GuardedHttpToolsProtocol) and c.idle),
        key=lambda c: c.waiting_since,
    )
    return sum(1 for c in idle[: max(0, count)] if c.close_if_idle())


__all__ = ["GuardedHttpToolsProtocol", "Limits", "close_idle", "install", "protocol_class"]
