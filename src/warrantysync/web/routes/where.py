"""Who is where: row presence, and asking for a field someone else holds.

docs/protocol.md, "Row presence" and "Asking for a locked field".
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ...errors import NotFound, ValidationFailed
from ...services.fields import check_field_name
from ...services.lockrequests import Answer
from ...services.locks import Lock, Owner
from ...services.rowpresence import Spot
from ..deps import Id, RawJson, ServicesDep, Writer
from ..errors import json_response
from ..inputs import CLIENT_ID_CHARS, parse_object, required_client_id
from .locks import lock_target

router = APIRouter(prefix="/api")

_SPOT_MEMBERS = {"case_id", "field", "editing", "idle"}
_ANSWERS: dict[str, Answer] = {"release": "release", "keep": "keep"}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    """The request body as the OpenAPI document shows it (the routes parse it by hand)."""
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


SPOT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "case_id": {"type": ["integer", "null"], "minimum": 1},
        "field": {"type": ["string", "null"]},
        "editing": {"type": "boolean"},
        "idle": {"type": "boolean"},
    },
}
ANSWER_SCHEMA = {
    "type": "object",
    "required": ["answer"],
    "additionalProperties": False,
    "properties": {"answer": {"enum": ["release", "keep"]}},
}
ASKED: dict[int | str, dict[str, Any]] = {
    202: {"description": "Asked: {request} (the field is held by someone else)"}
}


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise ValidationFailed(f"{name}: must be true or false", field=name, rule="type")
    return value


def _spot_body(body: dict[str, Any]) -> tuple[int | None, str | None, bool, bool]:
    for name in body:
        if name not in _SPOT_MEMBERS:
            raise ValidationFailed(f"{name}: unknown member", field=name, rule="unknown_member")
    case_id = body.get("case_id")
    if case_id is not None and (
        not isinstance(case_id, int) or isinstance(case_id, bool) or case_id <= 0
    ):
        raise ValidationFailed("case_id: must be a case id or null", field="case_id", rule="type")
    field = body.get("field")
    if field is not None:
        check_field_name(field)
    return case_id, field, _flag(body, "editing"), _flag(body, "idle")


@router.put("/branches/{branch_id}/row-presence", status_code=204, openapi_extra=_body(SPOT_SCHEMA))
async def report_spot(
    branch_id: Id, request: Request, raw: RawJson, principal: Writer, services: ServicesDep
) -> Response:
    """This tab has ``case_id`` open (null: none), edits ``field``, is ``idle`` or not."""
    await services.accounts.branch_access(user_id=principal.user_id, branch_id=branch_id)
    client_id = required_client_id(request)
    case_id, field, editing, idle = _spot_body(parse_object(raw))
    if case_id is not None:
        case_branch, _role = await services.accounts.case_access(
            user_id=principal.user_id, case_id=case_id
        )
        if case_branch != branch_id:
            raise NotFound("no such case in this branch")
    await services.limits.hit_row_presence(principal.user_id)
    spot = None
    if case_id is not None:
        spot = Spot(principal.user_id, principal.name, client_id, case_id, field, editing, idle)
    await services.rows.report(
        branch_id=branch_id, spot=spot, user_id=principal.user_id, client_id=client_id
    )
    return Response(status_code=204)


@router.post("/cases/{case_id}/locks/{field}/requests", responses=ASKED)
async def ask(
    case_id: Id, field: str, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    """Ask the holder for the field: 202 with the request, or 200 with the lock when free."""
    branch_id, client_id = await lock_target(case_id, field, request, principal, services)
    await services.limits.hit_lock_request(principal.user_id)
    outcome = await services.lock_requests.ask(
        case_id=case_id,
        branch_id=branch_id,
        field=field,
        asker=Owner(principal.user_id, principal.name, client_id),
    )
    if isinstance(outcome, Lock):
        return json_response(200, {"lock": {**outcome.public(), "token": outcome.token}})
    return json_response(202, {"request": outcome.seen_by(principal.user_id)})


@router.post("/lock-requests/{request_id}", openapi_extra=_body(ANSWER_SCHEMA))
async def answer(
    request_id: str, request: Request, raw: RawJson, principal: Writer, services: ServicesDep
) -> Response:
    """The holder's tab answers ``{"answer": "release"|"keep"}``."""
    client_id = required_client_id(request)
    body = parse_object(raw)
    given = body.get("answer")
    choice = _ANSWERS.get(given) if isinstance(given, str) else None
    if choice is None or set(body) != {"answer"}:
        raise ValidationFailed(
            'body: must be {"answer": "release"} or {"answer": "keep"}', field="answer", rule="enum"
        )
    if not 1 <= len(request_id) <= 64 or not all(c in CLIENT_ID_CHARS for c in request_id):
        raise NotFound("no such request: it was answered, timed out or withdrawn")
    await services.limits.hit_lock_request(principal.user_id)
    answered = await services.lock_requests.answer(
        request_id=request_id, user_id=principal.user_id, client_id=client_id, answer=choice
    )
    return json_response(200, {"request": answered})
