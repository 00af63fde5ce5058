"""The OpenAPI document at ``/api/openapi.json``, made to tell the truth.

The routes return plain ``Response`` objects (encoded once, with orjson), so
FastAPI cannot see their bodies: it would document every error as its own
``{"detail": [...]}`` shape, no request body for PATCH, and any JSON for a
case. This adds what docs/protocol.md specifies — the ``{"error", "message", …}``
body for every error status, the case and the request bodies — so outside
clients and the schema fuzzer (tests/security) read the real contract.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from ..services.accounts import PASSWORD_MAX_LENGTH
from ..storage.models import Priority, Status

_TEXT = {
    "customer_name": 120,
    "customer_phone": 40,
    "customer_email": 254,
    "product": 120,
    "serial_number": 80,
    "issue": 2000,
    "notes": 5000,
}
_NULLABLE_INT = {"anyOf": [{"type": "integer"}, {"type": "null"}]}
_FIELDS: dict[str, Any] = {
    **{name: {"type": "string", "maxLength": limit} for name, limit in _TEXT.items()},
    "purchase_date": {"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]},
    "status": {"type": "string", "enum": [s.value for s in Status]},
    "priority": {"type": "string", "enum": [p.value for p in Priority]},
    "assignee_id": _NULLABLE_INT,
}
SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "message"],
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
    },
    "Case": {
        "type": "object",
        "required": ["id", "branch_id", "case_number", "version", *_FIELDS],
        "properties": {
            "id": {"type": "integer"},
            "branch_id": {"type": "integer"},
            "case_number": {"type": "string"},
            **_FIELDS,
            "version": {"type": "integer", "minimum": 1},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "updated_by": _NULLABLE_INT,
        },
    },
    "CaseFields": {"type": "object", "properties": _FIELDS, "additionalProperties": False},
    "Login": {
        "type": "object",
        "required": ["email", "password"],
        "properties": {
            "email": {"type": "string", "maxLength": 254},
            "password": {"type": "string", "maxLength": PASSWORD_MAX_LENGTH},
        },
    },
    "CasePatch": {
        "type": "object",
        "required": ["changes"],
        "properties": {
            "changes": {"$ref": "#/components/schemas/CaseFields"},
            "expected": {"type": "object"},
            "lock_tokens": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    },
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
}
BODIES = {
    ("/api/auth/login", "post"): "Login",
    ("/api/cases/{case_id}", "patch"): "CasePatch",
    ("/api/branches/{branch_id}/cases", "post"): "CaseFields",
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
    return schema


def install(app: FastAPI) -> None:
    cached: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not cached:
            cached.update(document(app))
        return cached

    app.openapi = openapi  # type: ignore[method-assign]
