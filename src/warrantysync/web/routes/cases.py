"""Cases: snapshot, create, read, patch, delete, history (DESIGN §3)."""

from __future__ import annotations

import hashlib
import string
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from ...container import Services
from ...errors import InvalidJson, Unavailable, ValidationFailed, WarrantySyncError
from ...jsonutil import JSONDecodeError, dumps, loads
from ...services import caselist, idempotency
from ...services.cases import Actor
from ...services.fields import check_subset
from ...services.live import live_state
from ...storage.models import Role
from ..deps import CurrentUser, Id, RawJson, ServicesDep, Writer
from ..errors import body_of, json_response, status_of

router = APIRouter(prefix="/api")
PATCH_KEYS = frozenset({"changes", "expected", "lock_tokens"})
# [A-Za-z0-9_-] exactly: str.isalnum() would also let "é" or "²" through.
CLIENT_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_")


def client_id_of(request: Request) -> str | None:
    value = request.headers.get("x-client-id")
    if value is None:
        return None
    if not 1 <= len(value) <= 64 or not all(c in CLIENT_ID_CHARS for c in value):
        raise ValidationFailed(
            "X-Client-Id: must be 1..64 letters, digits, '-' or '_'",
            field="X-Client-Id",
            rule="client_id",
        )
    return value


def parse_object(raw: bytes, what: str = "body") -> dict[str, Any]:
    try:
        value = loads(raw)
    except JSONDecodeError:
        raise InvalidJson("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ValidationFailed(f"{what}: must be a JSON object", field=what, rule="type")
    return value


def _object_member(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body.get(name, {})
    if not isinstance(value, dict):
        raise ValidationFailed(f"{name}: must be a JSON object", field=name, rule="type")
    return value


def etag_matches(header: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison: a list of tags, `W/` ignored, `*` matches."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == etag:
            return True
    return False


@router.get("/branches/{branch_id}/cases")
async def list_cases(
    branch_id: Id, request: Request, principal: CurrentUser, services: ServicesDep
) -> Response:
    """Every case of the branch, or one page of a list (docs/protocol.md, "Listing cases").

    The 304 costs no case row: the ETag is built from the branch's event head
    (read with the access check), the live state and the query, before any
    case is read. Every change to a case moves the head.
    """
    branch, _role = await services.accounts.branch_access(
        user_id=principal.user_id, branch_id=branch_id
    )
    params = {name: request.query_params.getlist(name) for name in request.query_params}
    query = None
    if caselist.is_list_query(params):
        query = caselist.parse(params, user_id=principal.user_id)
    # Redis away: still the cases, with live_state saying locks and presence are unknown.
    state = await live_state(
        locks=services.locks,
        presence=services.presence,
        branch_id=branch_id,
        seen_by=principal.user_id,
    )
    extras = dumps(state)

    def etag_at(head: int) -> str:
        scope = f"{branch_id}:{head}:"
        if query is not None:
            scope += f"{principal.user_id}:{query.canonical()}:"
        return '"' + hashlib.sha256(scope.encode() + extras).hexdigest()[:32] + '"'

    etag = etag_at(branch.last_event_id)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    body: dict[str, Any]
    if query is None:
        cases, head = await services.cases.snapshot(branch_id=branch_id)
        body = {"cases": cases, **state, "last_event_id": str(head)}
    else:
        page, head = await services.cases.page(branch_id=branch_id, query=query)
        body = {
            "cases": page.cases,
            "cursors": page.cursors,
            "next_cursor": page.next_cursor,
            "total": page.total,
            **state,
            "last_event_id": str(head),
        }
    return json_response(200, body, {"ETag": etag_at(head), "Cache-Control": "no-cache"})


@router.post("/branches/{branch_id}/cases", status_code=201)
async def create_case(
    branch_id: Id, request: Request, raw: RawJson, principal: Writer, services: ServicesDep
) -> Response:
    await services.accounts.branch_access(
        user_id=principal.user_id, branch_id=branch_id, minimum=Role.editor, action="create cases"
    )
    await services.limits.hit_write(principal.user_id)
    values = parse_object(raw)
    actor = Actor(principal.user_id, principal.name, client_id_of(request))
    case = await services.cases.create(branch_id=branch_id, values=values, actor=actor)
    return json_response(201, case)


@router.get("/cases/{case_id}")
async def get_case(case_id: Id, principal: CurrentUser, services: ServicesDep) -> Response:
    await services.accounts.case_access(user_id=principal.user_id, case_id=case_id)
    return json_response(200, await services.cases.get(case_id=case_id))


@router.patch("/cases/{case_id}")
async def patch_case(
    case_id: Id, request: Request, raw: RawJson, principal: Writer, services: ServicesDep
) -> Response:
    started = time.perf_counter()
    branch_id, _role = await services.accounts.case_access(
        user_id=principal.user_id, case_id=case_id, minimum=Role.editor, action="edit cases"
    )
    await services.limits.hit_write(principal.user_id)
    replay = None
    if (key := request.headers.get("idempotency-key")) is not None:
        replay = idempotency.make_replay(
            principal.user_id, key, method="PATCH", path=request.url.path, body=raw
        )
        stored = await idempotency.lookup(services.db, replay)
        if stored is not None:
            return json_response(stored.status_code, stored.body, {"Idempotent-Replayed": "true"})
    try:
        case = await _patch(
            case_id, branch_id, request, raw, principal.user_id, principal.name, services, replay
        )
    except IntegrityError:
        # A concurrent twin with the same Idempotency-Key answered first
        # (its record made our transaction fail): answer what it answered.
        stored = None if replay is None else await idempotency.lookup(services.db, replay)
        if stored is None:
            raise
        return json_response(stored.status_code, stored.body, {"Idempotent-Replayed": "true"})
    except WarrantySyncError as exc:
        status = status_of(exc)
        if replay is not None and 400 <= status < 500 and status != 429:
            await idempotency.remember_refusal(
                services.db, replay, status_code=status, body=body_of(exc)
            )
        raise
    services.metrics.save_latency.observe(time.perf_counter() - started)
    return json_response(200, case)


async def _patch(
    case_id: int,
    branch_id: int,
    request: Request,
    raw: bytes,
    user_id: int,
    name: str,
    services: Services,
    replay: idempotency.Replay | None,
) -> dict[str, Any]:
    body = parse_object(raw)
    for key in body:
        if key not in PATCH_KEYS:
            raise ValidationFailed(f"{key}: unknown member", field=str(key), rule="unknown_member")
    changes = _object_member(body, "changes")
    if not changes:
        raise ValidationFailed(
            "changes: must name at least one field", field="changes", rule="required"
        )
    expected = _object_member(body, "expected")
    tokens = _object_member(body, "lock_tokens")
    check_subset("lock_tokens", tokens, changes)
    if not all(isinstance(t, str) for t in tokens.values()):
        raise ValidationFailed(
            "lock_tokens: values must be strings", field="lock_tokens", rule="type"
        )
    client_id = client_id_of(request)

    async def check_locks() -> None:
        try:
            await services.locks.check_write(
                case_id=case_id, fields=changes, user_id=user_id, client_id=client_id, tokens=tokens
            )
        except Unavailable:
            # Without lock checks only a save fenced by `expected` is safe.
            if not all(field in expected for field in changes):
                raise Unavailable(
                    "locks cannot be checked right now; retry, or send expected values",
                    retry_after=2,
                ) from None

    return await services.cases.patch(
        case_id=case_id,
        changes=changes,
        expected=expected,
        actor=Actor(user_id, name, client_id),
        branch_id=branch_id,
        before_write=check_locks,
        idempotency=replay,
    )


@router.delete("/cases/{case_id}", status_code=204)
async def delete_case(
    case_id: Id, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    await services.accounts.case_access(
        user_id=principal.user_id, case_id=case_id, minimum=Role.manager, action="delete cases"
    )
    await services.limits.hit_write(principal.user_id)
    await services.cases.delete(
        case_id=case_id, actor=Actor(principal.user_id, principal.name, client_id_of(request))
    )
    return Response(status_code=204)


@router.get("/cases/{case_id}/history")
async def history(
    case_id: Id,
    principal: CurrentUser,
    services: ServicesDep,
    limit: int = Query(500, ge=1, le=500),
    before: Annotated[Id | None, Query(ge=1)] = None,
) -> Response:
    await services.accounts.case_access(user_id=principal.user_id, case_id=case_id)
    rows = await services.cases.history(case_id=case_id, limit=limit, before=before)
    return json_response(200, rows)
