"""Cases: snapshot, create, read, patch, delete, history and restoring a value from it.

(docs/protocol.md, Cases and "Second chances".)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ...container import Services
from ...errors import RateLimited, Unavailable, WarrantySyncError
from ...jsonutil import dumps
from ...services import caselist
from ...services.accounts import Principal, has_role
from ...services.cases import Actor
from ...services.idempotency import Answer, IdempotencyGuard
from ...services.live import live_state
from ...services.passes import Unconfirmed
from ...services.restore import restore_value
from ...storage.models import Role
from ..deps import CurrentUser, Id, RawJson, Save, SaveDep, ServicesDep, Writer, fresh_writer
from ..errors import body_of, json_response, status_of
from ..inputs import client_id_of, parse_case_fields, parse_patch, parse_restore

router = APIRouter(prefix="/api")


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
        rows=services.rows,
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
    values = parse_case_fields(raw)
    actor = Actor(principal.user_id, principal.name, client_id_of(request))
    case = await services.cases.create(branch_id=branch_id, values=values, actor=actor)
    return json_response(201, case)


@router.get("/cases/{case_id}")
async def get_case(case_id: Id, principal: CurrentUser, services: ServicesDep) -> Response:
    await services.accounts.case_access(user_id=principal.user_id, case_id=case_id)
    return json_response(200, await services.cases.get(case_id=case_id))


@router.patch("/cases/{case_id}")
async def patch_case(case_id: Id, request: Request, save: SaveDep) -> Response:
    """The answers' order is the contract's (docs/protocol.md, PATCH).

    web/deps.py has already answered 401, 403 CSRF/Origin, 413 and 415; here
    come 404, 403 viewer, 429, the idempotent replay and the body's shape;
    ``CaseService.patch`` decides the rest.
    """
    # Not in the docstring, which is the public OpenAPI description: a
    # caller remembered from an earlier save skips the reads of its
    # credential and access (_remembered_save); anything it cannot answer
    # runs the save again with both read afresh (_fresh_save), so every
    # answer is the one it would be without the memory (docs/performance.md,
    # "Third round: CPU per save", steps 1 and 4).
    services: Services = request.app.state.services
    started = time.perf_counter()
    response: Response | None = None
    principal = save.principal
    if save.remembered:
        try:
            response = await _remembered_save(case_id, request, save, services)
        except Unconfirmed:
            services.accounts.passes.forget(
                key=save.pass_key, user_id=principal.user_id, case_id=case_id
            )
            principal = await fresh_writer(request, services)
    if response is None:
        response = await _fresh_save(case_id, request, principal, save.raw, services)
    services.metrics.save_latency.observe(time.perf_counter() - started)
    return response


async def _remembered_save(
    case_id: int, request: Request, save: Save, services: Services
) -> Response:
    """The save on the memory: its 200, ``Unavailable`` (503), else ``Unconfirmed``.

    The write transaction confirms the remembered caller and access
    (services/passes.py). Only a 200 is answered here, or a 503 when the
    database is away, which the fresh reads would answer first anyway; every
    other outcome is ``Unconfirmed`` with nothing written and nothing stored
    (the errors of ``CaseService.patch`` all come before its commit), so the
    fresh save answers it after the reads.
    """
    principal = save.principal
    access = services.accounts.passes.access(user_id=principal.user_id, case_id=case_id)
    if access is None or not has_role(access[1], Role.editor):
        raise Unconfirmed("no access remembered")
    try:
        await _count_write(request, principal, services)
        guard = request_guard(request, save.raw, principal.user_id, services)
        confirm = _confirmation(services, principal, case_id, guard)
        case = await _write(
            case_id,
            request,
            principal,
            save.raw,
            services,
            branch_id=access[0],
            guard=guard,
            confirm=confirm,
        )
    except IntegrityError:
        raise Unconfirmed("a twin is answered after the reads") from None
    except Unavailable:
        # Saying it now spares a second wait on a database that is away.
        raise
    except WarrantySyncError:
        raise Unconfirmed("a refusal is answered after the reads") from None
    return json_response(200, case)


def _confirmation(
    services: Services, principal: Principal, case_id: int, guard: IdempotencyGuard
) -> Callable[[AsyncSession], Awaitable[None]]:
    async def confirmed(session: AsyncSession) -> None:
        # The access, and the key's earlier answer (a replay is answered
        # after the reads), in the transaction that writes.
        await services.accounts.passes.confirm(
            session, principal, case_id=case_id, minimum=Role.editor
        )
        if await guard.stored(session):
            raise Unconfirmed("a replay is answered after the reads")

    return confirmed


async def _fresh_save(
    case_id: int, request: Request, principal: Principal, raw: bytes, services: Services
) -> Response:
    """The save with its caller's access read first, every answer in the contract's order."""
    branch_id, _role = await services.accounts.case_access(
        user_id=principal.user_id, case_id=case_id, minimum=Role.editor, action="edit cases"
    )
    await _count_write(request, principal, services)
    guard = request_guard(request, raw, principal.user_id, services)
    if (earlier := await guard.earlier()) is not None:
        return replayed(earlier)

    async def write() -> dict[str, Any]:
        return await _write(
            case_id, request, principal, raw, services, branch_id=branch_id, guard=guard
        )

    return await answered_once(guard, write)


async def _count_write(request: Request, principal: Principal, services: Services) -> None:
    """The save's one hit on the write limit, however often the save runs.

    A save that starts over after the memory gets the first hit's outcome
    again, its 429 included: hitting again would count it twice in the
    setting's windows before the one that refused (services/ratelimit.py)
    and twice in ``warrantysync_rate_limited_total``.
    """
    counted: RateLimited | bool = getattr(request.state, "write_counted", False)
    if isinstance(counted, RateLimited):
        raise counted
    if counted:
        return
    try:
        await services.limits.hit_write(principal.user_id)
    except RateLimited as refusal:
        request.state.write_counted = refusal
        raise
    request.state.write_counted = True


async def _write(
    case_id: int,
    request: Request,
    principal: Principal,
    raw: bytes,
    services: Services,
    *,
    branch_id: int,
    guard: IdempotencyGuard,
    confirm: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Both paths' core: the body's shape, then ``CaseService.patch``."""
    body = parse_patch(raw)
    return await services.cases.patch(
        case_id=case_id,
        changes=body.changes.root,
        expected=body.expected,
        lock_tokens=body.lock_tokens,
        actor=Actor(principal.user_id, principal.name, client_id_of(request)),
        branch_id=branch_id,
        idempotency=guard,
        confirm=confirm,
    )


def request_guard(
    request: Request, body: bytes, user_id: int, services: Services
) -> IdempotencyGuard:
    """The request's ``Idempotency-Key`` guard, keyed by its method, path and body."""
    return IdempotencyGuard(
        services.db,
        user_id=user_id,
        key=request.headers.get("idempotency-key"),
        method=request.method,
        path=request.url.path,
        body=body,
    )


def replayed(answer: Answer) -> Response:
    return json_response(answer.status_code, answer.body, {"Idempotent-Replayed": "true"})


async def answered_once(
    guard: IdempotencyGuard, work: Callable[[], Awaitable[dict[str, Any]]]
) -> Response:
    """``work``'s 200, or the answer an identical twin racing it under the same key got.

    The caller has asked ``guard.earlier()`` already. ``work`` stores its
    answer through ``guard`` in its own transaction; a refusal is stored
    afterwards (services/idempotency.py).
    """
    try:
        body = await work()
    except IntegrityError:
        if (twin := await guard.twin()) is None:
            raise
        return replayed(twin)
    except WarrantySyncError as exc:
        if (twin := await guard.refused(Answer(status_of(exc), body_of(exc)))) is None:
            raise
        return replayed(twin)
    return json_response(200, body)


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


@router.post("/cases/{case_id}/history/{entry_id}/restore")
async def restore_from_history(
    case_id: Id,
    entry_id: Id,
    request: Request,
    raw: RawJson,
    principal: Writer,
    services: ServicesDep,
) -> Response:
    """Set a field back to the value a history entry saved (docs/protocol.md, "Second chances").

    Answers in a PATCH's order: 404, 403 viewer, 429, the idempotent replay,
    the body (422), the entry (404, 422 ``read_only``), then the PATCH's own.
    """
    branch_id, _role = await services.accounts.case_access(
        user_id=principal.user_id, case_id=case_id, minimum=Role.editor, action="edit cases"
    )
    await services.limits.hit_write(principal.user_id)
    guard = request_guard(request, raw, principal.user_id, services)
    if (earlier := await guard.earlier()) is not None:
        return replayed(earlier)

    async def restore() -> dict[str, Any]:
        expected, side = parse_restore(raw)
        actor = Actor(principal.user_id, principal.name, client_id_of(request))
        return await restore_value(
            services.cases,
            case_id=case_id,
            entry_id=entry_id,
            expected=expected,
            side=side,
            actor=actor,
            branch_id=branch_id,
            idempotency=guard,
        )

    return await answered_once(guard, restore)
