"""Request ids: one per request, sent back as ``X-Request-Id`` and in every log line about it.

Each request gets a fresh id, unless it came from a trusted proxy
(``TRUSTED_PROXIES``) with a valid ``X-Request-Id`` of its own, which is
kept so the proxy's log and ours can be joined. Trust is judged by the TCP
peer: the app decides before ``web/forwarded.py`` replaces ``scope["client"]``
with the ``X-Forwarded-For`` client (uvicorn's own proxy-headers support is
off, see ``warrantysync.server``).
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable

from starlette.types import Scope

__all__ = ["TrustedPeers", "accept_request_id", "request_id_for"]

HEADER = b"x-request-id"

_VALID = re.compile(rb"[A-Za-z0-9._:/-]{1,128}")

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def accept_request_id(raw: bytes) -> str | None:
    """An incoming id when it is safe to log and echo (1..128 of ``A-Za-z0-9._:/-``)."""
    return raw.decode("ascii") if _VALID.fullmatch(raw) else None


def new_request_id() -> str:
    return secrets.token_hex(16)


class TrustedPeers:
    """``TRUSTED_PROXIES`` as addresses and networks; ``*`` trusts every peer."""

    def __init__(self, entries: Iterable[str]) -> None:
        self.everyone = False
        self.hosts: set[str] = set()
        self.networks: list[_Network] = []
        for entry in entries:
            if entry == "*":
                self.everyone = True
            elif "/" in entry:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            else:
                self.hosts.add(entry)

    def __contains__(self, host: object) -> bool:
        if not isinstance(host, str):
            return False
        if self.everyone or host in self.hosts:
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def request_id_for(scope: Scope, trusted: TrustedPeers | None) -> str:
    peer = scope.get("client")
    if trusted is not None and peer and peer[0] in trusted:
        for name, value in scope["headers"]:
            if name == HEADER:
                accepted = accept_request_id(value)
                if accepted is not None:
                    return accepted
    return new_request_id()
