"""The branch event stream (DESIGN §4)."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Query, Request

from ...errors import TooManyStreams, Unavailable, ValidationFailed
from ...services.streams import Stream, StreamConfig
from ..deps import CurrentUser, ServicesDep
from ..sse import EventStreamResponse
from .cases import CLIENT_ID_CHARS

router = APIRouter(prefix="/api")


def _client_id(raw: str | None) -> str:
    if raw is None or raw == "":
        return secrets.token_urlsafe(12)
    if len(raw) > 64 or not all(c in CLIENT_ID_CHARS for c in raw):
        raise ValidationFailed(
            "client_id: must be 1..64 letters, digits, '-' or '_'",
            field="client_id",
            rule="client_id",
        )
    return raw


@router.get("/branches/{branch_id}/events", response_model=None)
async def events(
    branch_id: int,
    request: Request,
    principal: CurrentUser,
    services: ServicesDep,
    client_id: str | None = Query(None),
    last_event_id: str | None = Query(None),
) -> EventStreamResponse:
    await services.accounts.branch_access(user_id=principal.user_id, branch_id=branch_id)
    if services.broker.shutting_down:
        raise Unavailable("the server is restarting", retry_after=1)
    settings = services.settings
    stream = Stream(
        broker=services.broker,
        locks=services.locks,
        presence=services.presence,
        config=StreamConfig(
            heartbeat_ms=int(settings.heartbeat_interval * 1000),
            lock_ttl_ms=int(settings.lock_ttl * 1000),
            replay_window=settings.replay_window,
            max_frames=settings.stream_buffer,
        ),
        principal=principal,
        branch_id=branch_id,
        client_id=_client_id(client_id),
        resume=request.headers.get("last-event-id") or last_event_id,
    )
    try:
        await stream.open(max_streams=settings.max_streams_per_user)
    except TooManyStreams:
        services.metrics.rate_limited.labels(scope="streams").inc()
        raise
    return EventStreamResponse(stream, send_timeout=settings.send_timeout)
