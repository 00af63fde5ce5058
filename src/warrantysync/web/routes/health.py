"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from ...errors import NotAuthenticated
from ..deps import ServicesDep
from ..errors import json_response

router = APIRouter()


@router.get("/healthz")
async def healthz() -> Response:
    return json_response(200, {"status": "ok"})


@router.get("/readyz")
async def readyz(services: ServicesDep) -> Response:
    checks: dict[str, str] = {}
    try:
        await services.db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    if services.settings.redis_url is not None:
        checks["redis"] = "ok" if await services.broker.backend.healthy() else "unreachable"
    if services.broker.shutting_down:
        checks["server"] = "shutting down"
    ready = all(value == "ok" for value in checks.values())
    return json_response(
        200 if ready else 503,
        {"status": "ready" if ready else "unavailable", "checks": checks},
        None if ready else {"Retry-After": "2"},
    )


@router.get("/metrics")
async def metrics(request: Request, services: ServicesDep) -> Response:
    token = services.settings.metrics_token
    if token is not None:
        # Constant time, so the answer's timing tells nothing about the token.
        sent = request.headers.get("authorization", "")
        expected = f"Bearer {token.get_secret_value()}"
        if not hmac.compare_digest(sent.encode(), expected.encode()):
            raise NotAuthenticated("send Authorization: Bearer <WARRANTYSYNC_METRICS_TOKEN>")
    return Response(
        services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
