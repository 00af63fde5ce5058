"""Cases as CSV: export the list as it is filtered, import a file of new cases.

``GET /api/branches/{bid}/cases.csv`` takes the list's filters and sort
(docs/protocol.md, "Listing cases") and streams every matching case;
``POST /api/branches/{bid}/cases/import`` takes a CSV body from a manager and
creates its cases all or nothing (services/imports.py). The CSV format is
services/csvio.py's and docs/protocol.md's "CSV".
"""

from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from ...errors import UnsupportedMediaType, ValidationFailed
from ...services import caselist
from ...services.cases import Actor
from ...services.imports import CaseImport, one_by_one
from ...storage.models import Role
from ..deps import CurrentUser, Id, ServicesDep, Writer, read_body, refuse_declared_body
from ..errors import json_response
from ..inputs import client_id_of

router = APIRouter(prefix="/api")
CSV_TYPES = frozenset({"text/csv", "application/csv"})
PAGE_ONLY = ("limit", "cursor", "until")
FLAGS = {"true": True, "1": True, "false": False, "0": False}


def _filename(branch: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", branch).strip("-").lower() or "branch"
    return f"{slug}-cases-{dt.datetime.now(dt.UTC):%Y-%m-%d}.csv"


@router.get("/branches/{branch_id}/cases.csv")
async def export_cases(
    branch_id: Id, request: Request, principal: CurrentUser, services: ServicesDep
) -> Response:
    branch, _role = await services.accounts.branch_access(
        user_id=principal.user_id, branch_id=branch_id
    )
    params = {name: request.query_params.getlist(name) for name in request.query_params}
    for name in PAGE_ONLY:
        if name in params:
            raise ValidationFailed(
                f"{name}: the export is the whole list; it takes no {name}",
                field=name,
                rule="not_allowed",
            )
    query = caselist.parse(params, user_id=principal.user_id)
    return StreamingResponse(
        services.cases.export(branch_id=branch_id, query=query),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="{_filename(branch.name)}"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/branches/{branch_id}/cases/import")
async def import_cases(
    branch_id: Id, request: Request, principal: Writer, services: ServicesDep
) -> Response:
    """Managers only; the body is read after that check, up to ``MAX_IMPORT_BYTES``.

    Answers in the order of every write (docs/protocol.md, "CSV"): 401 · 403
    CSRF/Origin · 413 for a declared oversize · 404 · 403 role · 429 · 422
    ``dry_run`` · 413 while reading · 415 · 422 rows · 200.
    """
    refuse_declared_body(request, services.settings.max_import_bytes)
    await services.accounts.branch_access(
        user_id=principal.user_id, branch_id=branch_id, minimum=Role.manager, action="import cases"
    )
    await services.limits.hit_write(principal.user_id)
    flag = request.query_params.getlist("dry_run")
    if len(flag) > 1 or (flag and flag[0] not in FLAGS):
        raise ValidationFailed("dry_run: must be true or false", field="dry_run", rule="type")
    raw = await read_body(request, services.settings.max_import_bytes)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in CSV_TYPES:
        raise UnsupportedMediaType("send the file as text/csv")
    importer = CaseImport(
        services.db,
        publish=one_by_one(services.cases.publish),
        replay_window=services.cases.replay_window,
    )
    report = await importer.run(
        branch_id=branch_id,
        data=raw,
        actor=Actor(principal.user_id, principal.name, client_id_of(request)),
        dry_run=bool(flag) and FLAGS[flag[0]],
    )
    return json_response(200, report.as_json())
