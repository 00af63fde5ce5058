"""Field locks: PUT acquires or renews, DELETE releases (docs/protocol.md, Locks)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from ...container import Services
from ...errors import ValidationFailed
from ...services.accounts import Principal
from ...services.fields import check_field_name
from ...services.locks import Owner
from ...storage.models import Role
from ..deps import Id, ServicesDep, Writer
from ..errors import json_response
from ..inputs import CLIENT_ID_RULE, client_id_of, required_client_id, valid_client_id

router = APIRouter(prefix="/api")


async def lock_target(
    case_id: int, field: str, request: Request, principal: Principal, services: Services
) -> tuple[int, str]:
    """The branch of an editor's field and the tab asking for its lock (404, 403, 422)."""
    branch_id, _role = await services.accounts.case_access(
        user_id=principal.user_id, case_id=case_id, minimum=Role.editor, action="edit cases"
    )
    check_field_name(field)
    return branch_id, required_client_id(request)


@router.put("/cases/{case_id}/locks/{field}")
async def acquire(
    case_id: Id, field: str, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    branch_id, client_id = await lock_target(case_id, field, request, principal, services)
    await services.limits.hit_lock(principal.user_id)
    lock = await services.locks.acquire(
        case_id=case_id,
        branch_id=branch_id,
        field=field,
        owner=Owner(principal.user_id, principal.name, client_id),
    )
    return json_response(200, {"lock": {**lock.public(), "token": lock.token}})


@router.delete("/cases/{case_id}/locks/{field}", status_code=204)
async def release(
    case_id: Id, field: str, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    branch_id, role = await services.accounts.case_access(
        user_id=principal.user_id, case_id=case_id, minimum=Role.editor, action="edit cases"
    )
    check_field_name(field)
    client_id = client_id_of(request)
    await services.limits.hit_lock(principal.user_id)
    await services.locks.release(
        case_id=case_id,
        branch_id=branch_id,
        field=field,
        user_id=principal.user_id,
        client_id=client_id,
        force=role == Role.manager,
        name=principal.name,
    )
    return Response(status_code=204)


@router.delete("/branches/{branch_id}/clients/{client_id}/locks", status_code=204)
async def release_client(
    branch_id: Id, client_id: str, principal: Writer, services: ServicesDep
) -> Response:
    """Release every lock one of your own tabs holds on the branch (it closed or crashed)."""
    await services.accounts.branch_access(user_id=principal.user_id, branch_id=branch_id)
    if not valid_client_id(client_id):
        raise ValidationFailed(f"client_id: {CLIENT_ID_RULE}", field="client_id", rule="client_id")
    await services.limits.hit_lock(principal.user_id)
    await services.locks.release_client(
        branch_id=branch_id, user_id=principal.user_id, client_id=client_id, reason="released"
    )
    return Response(status_code=204)
