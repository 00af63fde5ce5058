"""The branch event stream: ``GET /api/branches/{branch_id}/events`` (docs/protocol.md).

Served on its own lane (``web/lane.py``), not through FastAPI's router: a
stream is a request that stays open for hours, and every layer it passes
through stays suspended on its stack for as long. This module is the
endpoint itself — who may open which stream, and on what terms.
"""

from __future__ import annotations

import re
import secrets

from starlette.requests import Request

from ...container import Services
from ...errors import NotAuthenticated, Unavailable, ValidationFailed
from ...ids import ID_RULE, parse_id
from ...services.streams import Stream
from ..deps import optional_principal
from ..inputs import CLIENT_ID_RULE, valid_client_id
from ..sse import EventStreamResponse

PATH = re.compile(r"/api/branches/([^/]+)/events")


def _client_id(raw: str | None) -> str:
    if raw is None or raw == "":
        return secrets.token_urlsafe(12)
    if not valid_client_id(raw):
        raise ValidationFailed(
            f"client_id: {CLIENT_ID_RULE}",
            field="client_id",
            rule="client_id",
        )
    return raw


def _branch_id(raw: str) -> int:
    branch_id = parse_id(raw)
    if branch_id is None:
        raise ValidationFailed(f"branch_id: {ID_RULE}", field="branch_id", rule="id")
    return branch_id


async def open_stream(request: Request, raw_branch_id: str) -> EventStreamResponse:
    """Authenticate and check access; the response writes what ``async with`` opens.

    Refusals come in the order they always did: 401, 422 for the branch id,
    404 (not a member), 503 (shutting down), 422 for ``client_id`` — and 429
    (too many streams) as the stream is counted, entering
    ``async with response.stream`` (``web/lane.py``).
    """
    services: Services = request.app.state.services
    principal = await optional_principal(request, services)
    if principal is None:
        raise NotAuthenticated("sign in first")
    branch_id = _branch_id(raw_branch_id)
    await services.accounts.branch_access(user_id=principal.user_id, branch_id=branch_id)
    if services.broker.shutting_down:
        raise Unavailable("the server is restarting", retry_after=1)
    client_id = _client_id(request.query_params.get("client_id"))
    settings = services.settings
    stream = Stream(
        broker=services.broker,
        locks=services.locks,
        presence=services.presence,
        config=services.stream_config,
        principal=principal,
        branch_id=branch_id,
        client_id=client_id,
        resume=request.headers.get("last-event-id") or request.query_params.get("last_event_id"),
        rows=services.rows,
    )
    return EventStreamResponse(
        stream, send_timeout=settings.send_timeout, direct="direct" in settings.fast_paths
    )
