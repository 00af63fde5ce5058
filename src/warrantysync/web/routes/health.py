"""Liveness, readiness and Prometheus metrics.

``/readyz`` tells a load balancer whether to send this node traffic
(docs/operations.md, "Health checks"): 503 *unavailable* when the database
does not take a write (every request would fail) or the node is shutting
down; 200 *degraded* when only Redis is away, because saves, snapshots and
streams still work through the database and a Redis outage hits every node
alike — answering 503 then would pull the whole cluster out at once.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from ...errors import NotAuthenticated, Unavailable
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
        await services.db.probe()
        checks["database"] = "ok"
    except Unavailable as exc:
        checks["database"] = f"unavailable: {exc.message}"
    except Exception as exc:  # e.g. no schema yet: not ready either way
        checks["database"] = f"failed: {type(exc).__name__}"
    if services.settings.redis_url is not None:
        checks["redis"] = "ok" if await services.broker.backend.healthy() else "unreachable"
    if services.broker.shutting_down:
        checks["server"] = "shutting down"
    if checks["database"] != "ok" or "server" in checks:
        body = {"status": "unavailable", "checks": checks}
        return json_response(503, body, {"Retry-After": "2"})
    status = "ready" if all(value == "ok" for value in checks.values()) else "degraded"
    return json_response(200, {"status": status, "checks": checks})


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
