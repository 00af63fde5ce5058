"""The trash: a branch's deleted cases, and bringing one back (docs/protocol.md, "Trash")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request, Response

from ...services.cases import Actor
from ...storage.models import Role
from ..deps import CurrentUser, Id, ServicesDep, Writer
from ..errors import json_response
from ..inputs import client_id_of
from .cases import answered_once, replayed, request_guard

router = APIRouter(prefix="/api")


@router.get("/branches/{branch_id}/trash")
async def list_trash(
    branch_id: Id,
    principal: CurrentUser,
    services: ServicesDep,
    limit: int = Query(500, ge=1, le=1000),
) -> Response:
    await services.accounts.branch_access(
        user_id=principal.user_id,
        branch_id=branch_id,
        minimum=Role.manager,
        action="see deleted cases",
    )
    return json_response(200, await services.trash.list(branch_id=branch_id, limit=limit))


@router.post("/cases/{case_id}/restore")
async def restore_case(
    case_id: Id, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    """401 · 403 CSRF/Origin · replay · 404 (not in the trash) · 403 not a manager · 429 · 200.

    The replay comes first: once restored, the case is no longer in the
    trash, and a retry whose first answer was lost must still get it.
    """
    guard = request_guard(request, b"", principal.user_id, services)
    if (earlier := await guard.earlier()) is not None:
        return replayed(earlier)
    await services.accounts.trash_access(user_id=principal.user_id, case_id=case_id)
    await services.limits.hit_write(principal.user_id)

    async def undelete() -> dict[str, Any]:
        actor = Actor(principal.user_id, principal.name, client_id_of(request))
        return await services.cases.undelete(case_id=case_id, actor=actor, idempotency=guard)

    return await answered_once(guard, undelete)
