"""web/inputs.py: the typed bodies of a case's POST and PATCH, and ``X-Client-Id``.

Every refusal word for word is pinned through the API in
tests/test_api_cases.py (``PATCH_REFUSALS``); here are the parsed values and
the OpenAPI schemas the same models produce.
"""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from warrantysync import create_app
from warrantysync.casefields import EDITABLE
from warrantysync.config import Settings
from warrantysync.errors import InvalidJson, ValidationFailed
from warrantysync.web.inputs import (
    client_id_of,
    parse_case_fields,
    parse_patch,
    required_client_id,
)


def request_with(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    return Request({"type": "http", "method": "PATCH", "path": "/", "headers": raw})


def test_a_patch_body_parses_to_its_members_with_empty_defaults() -> None:
    body = parse_patch(b'{"changes": {"status": "ready", "notes": "x"}}')
    assert list(body.changes.root.items()) == [("status", "ready"), ("notes", "x")]
    assert (body.expected, body.lock_tokens) == ({}, {})
    full = parse_patch(
        b'{"lock_tokens": {"notes": "t"}, "expected": {"notes": ""}, "changes": {"notes": "y"}}'
    )
    assert (full.changes.root, full.expected, full.lock_tokens) == (
        {"notes": "y"},
        {"notes": ""},
        {"notes": "t"},
    )


def test_values_are_left_to_the_field_rules() -> None:
    """Any JSON value passes the model; services/fields.py judges it with the case's branch."""
    body = parse_patch(b'{"changes": {"colour": [1, {"a": null}], "id": 5}}')
    assert body.changes.root == {"colour": [1, {"a": None}], "id": 5}


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff", b'{"changes": {"notes": NaN}}'])
def test_what_is_not_json_is_invalid_json(raw: bytes) -> None:
    with pytest.raises(InvalidJson):
        parse_patch(raw)
    with pytest.raises(InvalidJson):
        parse_case_fields(raw)


def test_a_new_cases_body_is_any_object_of_fields_in_order() -> None:
    values = parse_case_fields(b'{"status": "new", "customer_name": "A", "bogus": 1}')
    assert list(values) == ["status", "customer_name", "bogus"]
    assert parse_case_fields(b"{}") == {}
    for raw in (b"[]", b"null", b'"x"', b"3"):
        with pytest.raises(ValidationFailed) as refused:
            parse_case_fields(raw)
        assert refused.value.message == "body: must be a JSON object"
        assert refused.value.extra == {"field": "body", "rule": "type"}


def test_client_ids() -> None:
    assert client_id_of(request_with({})) is None
    assert client_id_of(request_with({"X-Client-Id": "tab-1_A"})) == "tab-1_A"
    # A tab under its browser's connection id (docs/protocol.md, "Tabs sharing one stream").
    assert client_id_of(request_with({"X-Client-Id": "br0wser.tab-1"})) == "br0wser.tab-1"
    for bad in ("", "a b", "x" * 65, "a.b.c", ".b", "a.", "x" * 32 + "." + "y" * 32):
        with pytest.raises(ValidationFailed) as refused:
            client_id_of(request_with({"X-Client-Id": bad}))
        assert refused.value.extra == {"field": "X-Client-Id", "rule": "client_id"}
    with pytest.raises(ValidationFailed) as missing:
        required_client_id(request_with({}))
    assert missing.value.extra == {"field": "X-Client-Id", "rule": "required"}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:", secret_key="x"))
    found: dict[str, Any] = app.openapi()["components"]["schemas"]
    return found


def test_the_patch_schema_is_the_model(schemas: dict[str, Any]) -> None:
    patch = schemas["CasePatch"]
    assert patch["required"] == ["changes"]
    assert patch["additionalProperties"] is False
    assert patch["properties"]["changes"] == {"$ref": "#/components/schemas/CaseFields"}
    assert patch["properties"]["expected"]["type"] == "object"
    assert patch["properties"]["lock_tokens"]["additionalProperties"] == {"type": "string"}
    assert "$defs" not in patch


def test_the_case_fields_schema_is_the_field_table(schemas: dict[str, Any]) -> None:
    fields = schemas["CaseFields"]
    assert fields["additionalProperties"] is False
    assert fields["properties"] == {spec.name: spec.json_schema() for spec in EDITABLE}
