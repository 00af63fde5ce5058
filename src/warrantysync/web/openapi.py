"""The OpenAPI document at ``/api/openapi.json``, made to tell the truth.

The routes return plain ``Response`` objects (encoded once, with orjson), so
FastAPI cannot see their bodies: it would document every error as its own
``{"detail": [...]}`` shape, no request body for PATCH, and any JSON for a
case. This adds the contract of docs/protocol.md — the ``{"error",
"message", …}`` body for every error status (Errors), the case (Cases,
built from the field table in casefields.py) and the request bodies (the
models they are parsed with, web/inputs.py) — so outside clients and the
schema fuzzer (tests/security) read the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..casefields import FIELDS, SORTABLE, Status
from ..services import caselist
from ..services.accounts import PASSWORD_MAX_LENGTH
from .inputs import CasePatch, RestoreValue

REF = "#/components/schemas/{model}"


def _model_schemas() -> dict[str, Any]:
    """The parsed bodies and the models they refer to (``CaseFields``), as components."""
    schema = CasePatch.model_json_schema(ref_template=REF)
    restore = RestoreValue.model_json_schema(ref_template=REF)
    return {**schema.pop("$defs", {}), "CasePatch": schema, "RestoreValue": restore}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Case": {
        "type": "object",
        "required": [spec.name for spec in FIELDS],
        "properties": {spec.name: spec.json_schema() for spec in FIELDS},
    },
    "Login": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": {"type": "string", "maxLength": 254},
            "password": {"type": "string", "maxLength": PASSWORD_MAX_LENGTH},
        },
    },
    "PasswordChange": {
        "type": "object",
        "required": ["current_password", "new_password"],
        "properties": {
            "current_password": {"type": "string", "maxLength": 4 * PASSWORD_MAX_LENGTH},
            "new_password": {"type": "string", "maxLength": 4 * PASSWORD_MAX_LENGTH},
        },
    },
    **_model_schemas(),
}


def _json(ref: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}


ERROR = {
    "description": "An error: {error, message, …} (docs/protocol.md)",
    "content": _json("Error"),
}
CASE_OPERATIONS = {
    ("/api/cases/{case_id}", "get"),
    ("/api/cases/{case_id}", "patch"),
    ("/api/branches/{branch_id}/cases", "post"),
    ("/api/cases/{case_id}/history/{entry_id}/restore", "post"),
    ("/api/cases/{case_id}/restore", "post"),
}
BODIES = {
    ("/api/auth/login", "post"): "Login",
    ("/api/auth/password", "post"): "PasswordChange",
    ("/api/cases/{case_id}", "patch"): "CasePatch",
    ("/api/branches/{branch_id}/cases", "post"): "CaseFields",
    ("/api/cases/{case_id}/history/{entry_id}/restore", "post"): "RestoreValue",
}


READY = {"type": "object", "required": ["status", "checks"]}
OPERATIONS = {
    ("/metrics", "get"): {
        "200": {
            "description": "Prometheus text format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        "401": {**ERROR, "description": "WARRANTYSYNC_METRICS_TOKEN is set and was not sent"},
    },
    ("/readyz", "get"): {
        "200": {"description": "Ready", "content": {"application/json": {"schema": READY}}},
        "503": {"description": "Not ready", "content": {"application/json": {"schema": READY}}},
    },
}


def _param(name: str, where: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": schema}


# The list's query (services/caselist.py; docs/protocol.md, "Listing cases").
SORTS = [sort for name in SORTABLE for sort in (name, f"-{name}")]
FILTERS = [
    _param("q", "query", {"type": "string", "maxLength": caselist.MAX_QUERY}),
    {
        **_param(
            "status", "query", {"type": "array", "items": {"enum": [s.value for s in Status]}}
        ),
        "style": "form",
        "explode": True,
    },
    _param("assignee", "query", {"type": "string", "pattern": "^(me|none|[0-9]{1,18})$"}),
    _param("sort", "query", {"enum": SORTS}),
]
PAGING = [
    _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": caselist.MAX_LIMIT}),
    _param("cursor", "query", {"type": "string"}),
    _param("until", "query", {"type": "string"}),
]
PARAMETERS = {
    ("/api/branches/{branch_id}/cases", "get"): FILTERS + PAGING,
    ("/api/branches/{branch_id}/cases.csv", "get"): FILTERS,
    ("/api/branches/{branch_id}/cases/import", "post"): [
        _param("dry_run", "query", {"type": "boolean"})
    ],
}
CSV_TEXT = {"text/csv": {"schema": {"type": "string"}}}
OPERATIONS[("/api/branches/{branch_id}/cases.csv", "get")] = {
    "200": {
        "description": "Every case of the list, as CSV (docs/protocol.md, CSV)",
        "content": CSV_TEXT,
    }
}
OPERATIONS[("/api/branches/{branch_id}/cases/import", "post")] = {
    "200": {
        "description": "What was imported (or, with dry_run, would be)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["rows", "imported", "dry_run", "case_numbers"],
                }
            }
        },
    }
}


# Served on the stream lane (web/lane.py), so no FastAPI route describes it.
EVENTS_PATH = "/api/branches/{branch_id}/events"
EVENTS = {
    "get": {
        "summary": "The branch's event stream (Server-Sent Events)",
        "operationId": "events",
        "description": "Frames and event types: docs/protocol.md.",
        "parameters": [
            _param("branch_id", "path", {"type": "integer"}, required=True),
            _param("client_id", "query", {"type": "string", "maxLength": 64}),
            _param("last_event_id", "query", {"type": "string"}),
            _param("Last-Event-ID", "header", {"type": "string"}),
        ],
        "responses": {
            "200": {
                "description": "An open stream",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
    }
}


def document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    schema.setdefault("paths", {})[EVENTS_PATH] = EVENTS
    schema.setdefault("components", {}).setdefault("schemas", {}).update(SCHEMAS)
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if (path, method) in OPERATIONS:
                operation["responses"] = OPERATIONS[path, method]
        if not path.startswith("/api/"):
            continue
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses["422"] = ERROR
            responses["default"] = ERROR
            if (path, method) in CASE_OPERATIONS:
                for status in ("200", "201"):
                    if status in responses:
                        responses[status]["content"] = _json("Case")
            if (path, method) in BODIES:
                operation["requestBody"] = {
                    "required": True,
                    "content": _json(BODIES[path, method]),
                }
            if (path, method) in PARAMETERS:
                operation.setdefault("parameters", []).extend(PARAMETERS[path, method])
            if (path, method) == ("/api/branches/{branch_id}/cases/import", "post"):
                operation["requestBody"] = {"required": True, "content": CSV_TEXT}
    return schema


def install(app: FastAPI) -> None:
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(document(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]
