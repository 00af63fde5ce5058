"""casefields.py: the one field table, and everything built from it.

The validators (services/fields.py), the columns (storage/models.py and the
migrated schema), a case's JSON (services/cases.py), the OpenAPI schemas
(web/openapi.py) and the table the browser tests use (tests/js/fields.json)
must all say what the table says. tests/test_fields.py and
tests/test_api_cases.py pin the contract's values themselves.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from warrantysync import Settings, casefields, create_app
from warrantysync.casefields import EDITABLE, FIELD, FIELDS, Field, Kind, Save
from warrantysync.errors import ValidationFailed
from warrantysync.services import cases
from warrantysync.services import fields as F
from warrantysync.storage.models import WarrantyCase

FIXTURE = Path(__file__).parent / "js" / "fields.json"
REWRITE = (
    ".venv/bin/python -c 'import json; from warrantysync.casefields import client_table; "
    "print(json.dumps(client_table(), indent=2))' > tests/js/fields.json"
)
CTX = F.Context(timezone="UTC", members={1: "editor"})
TEXT_FIELDS = [spec for spec in EDITABLE if spec.max_length is not None]
COLUMNS = WarrantyCase.__table__.c


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:", secret_key="x"))
    schemas: dict[str, Any] = app.openapi()["components"]["schemas"]
    return schemas


def of_length(spec: Field, length: int) -> str:
    """A value of ``length`` characters that breaks no other rule of ``spec``."""
    if not spec.email:
        return "x" * length
    domain = "example.com"
    return "a" * (length - len(domain) - 1) + "@" + domain


def refusal(field: str, value: object) -> dict[str, object]:
    with pytest.raises(ValidationFailed) as caught:
        F.validate({field: value}, CTX)
    return caught.value.extra


def test_the_browser_tests_use_the_servers_table() -> None:
    assert json.loads(FIXTURE.read_text()) == casefields.client_table(), (
        f"tests/js/fields.json is out of date; rewrite it with: {REWRITE}"
    )


def test_the_table_is_the_bottom_layer() -> None:
    # storage/models.py imports it, so it may import nothing of the package.
    tree = ast.parse(Path(casefields.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("warrantysync"), (
                node.module
            )
        elif isinstance(node, ast.Import):
            assert all(not a.name.startswith("warrantysync") for a in node.names)


def test_a_case_json_lists_the_table_in_order(openapi: dict[str, Any]) -> None:
    names = [spec.name for spec in FIELDS]
    assert list(casefields.COLUMNS) == names
    assert set(names) <= set(COLUMNS.keys())
    assert list(openapi["Case"]["properties"]) == names
    assert openapi["Case"]["required"] == names
    row = {name: None for name in names} | {"deleted_at": None, "status": casefields.Status.new}
    assert list(cases.case_json(row)) == names


def test_editable_and_read_only_follow_the_table(openapi: dict[str, Any]) -> None:
    editable = [spec.name for spec in FIELDS if spec.kind is not None]
    assert [spec.name for spec in EDITABLE] == editable
    assert set(F.RULES) == F.EDITABLE == set(editable)
    assert {spec.name for spec in FIELDS} - F.EDITABLE == F.READ_ONLY
    assert list(openapi["CaseFields"]["properties"]) == editable
    assert openapi["CaseFields"]["additionalProperties"] is False


@pytest.mark.parametrize("spec", TEXT_FIELDS, ids=lambda spec: spec.name)
def test_one_limit_for_validator_column_and_openapi(spec: Field, openapi: dict[str, Any]) -> None:
    limit = spec.max_length
    assert limit is not None
    assert openapi["CaseFields"]["properties"][spec.name]["maxLength"] == limit
    assert openapi["Case"]["properties"][spec.name]["maxLength"] == limit
    column = COLUMNS[spec.name].type
    if spec.text_column:
        assert isinstance(column, sa.Text) and column.length is None
    else:
        assert isinstance(column, sa.String) and column.length == limit
    assert F.validate({spec.name: of_length(spec, limit)}, CTX) == {
        spec.name: of_length(spec, limit)
    }
    assert refusal(spec.name, of_length(spec, limit + 1)) == {
        "field": spec.name,
        "rule": "max_length",
    }


def test_the_migrated_schema_has_the_tables_lengths(migrated_template: Path) -> None:
    # A limit raised in the table without a migration would fail here.
    engine = sa.create_engine(f"sqlite:///{migrated_template}")
    try:
        columns = {c["name"]: c["type"] for c in sa.inspect(engine).get_columns("warranty_cases")}
    finally:
        engine.dispose()
    for spec in FIELDS:
        if spec.max_length is None:
            continue
        if spec.text_column:
            assert isinstance(columns[spec.name], sa.Text), spec.name
        else:
            assert columns[spec.name].length == spec.max_length, spec.name


@pytest.mark.parametrize("spec", EDITABLE, ids=lambda spec: spec.name)
def test_column_nullability_and_default_follow_the_table(spec: Field) -> None:
    column = COLUMNS[spec.name]
    assert column.nullable is spec.nullable
    if spec.default is None:
        assert column.default is None
    else:
        assert isinstance(column.default, sa.ColumnDefault) and column.default.is_scalar
        assert column.default.arg == spec.default


def test_choices_are_the_same_everywhere(openapi: dict[str, Any]) -> None:
    for spec in EDITABLE:
        if spec.choices is None:
            assert "enum" not in openapi["CaseFields"]["properties"][spec.name]
            continue
        values = [choice.value for choice in spec.choices]
        assert openapi["CaseFields"]["properties"][spec.name]["enum"] == values
        assert list(COLUMNS[spec.name].type.enums) == values
        for value in values:
            assert F.validate({spec.name: value}, CTX) == {spec.name: spec.choices(value)}
        assert refusal(spec.name, "not-a-choice") == {"field": spec.name, "rule": "choice"}


def test_required_and_trim_follow_the_table(openapi: dict[str, Any]) -> None:
    for spec in TEXT_FIELDS:
        schema = openapi["CaseFields"]["properties"][spec.name]
        if spec.required:
            assert schema["minLength"] == 1
            assert refusal(spec.name, " " if spec.trim else "") == {
                "field": spec.name,
                "rule": "required",
            }
        else:
            assert "minLength" not in schema
            assert F.validate({spec.name: ""}, CTX) == {spec.name: ""}
        kept = F.validate({spec.name: " ab@example.com "}, CTX)[spec.name]
        assert kept == ("ab@example.com" if spec.trim else " ab@example.com "), spec.name


def test_nullable_fields_are_nullable_in_openapi(openapi: dict[str, Any]) -> None:
    for spec in FIELDS:
        schema = openapi["Case"]["properties"][spec.name]
        assert ({"type": "null"} in schema.get("anyOf", [])) is spec.nullable, spec.name
    for spec in EDITABLE:
        if spec.nullable:
            assert F.validate({spec.name: None}, CTX) == {spec.name: None}
        else:
            assert refusal(spec.name, None)["rule"] in ("type", "choice")


def test_text_debounces_choices_and_dates_save_at_once() -> None:
    assert {kind: casefields.SAVE_MODES[kind] for kind in Kind} == {
        Kind.text: Save.debounced,
        Kind.multiline: Save.debounced,
        Kind.select: Save.immediate,
        Kind.date: Save.immediate,
    }
    for spec in EDITABLE:
        assert (spec.name in F.IMMEDIATE) is (spec.save is Save.immediate)
    for spec in FIELDS:
        if not spec.editable:
            assert spec.save is None and spec.for_client()["save"] is None


def test_the_branch_context_is_read_only_where_the_table_says() -> None:
    assert {spec.name for spec in EDITABLE if spec.not_future or spec.member_of_branch} == (
        F.CONTEXT_FIELDS
    )


def test_the_client_rows_carry_the_table() -> None:
    for spec, row in zip(FIELDS, casefields.client_table(), strict=True):
        assert row["name"] == spec.name
        assert row["kind"] == (None if spec.kind is None else spec.kind.value)
        assert row["max_length"] == spec.max_length
        assert row["label"] == spec.label and row["label"]
        if spec.choices is not None:
            assert row["choices"] == [c.value for c in spec.choices]
            assert row["default"] in row["choices"]
    assert json.loads(json.dumps(casefields.client_table())) == casefields.client_table()


def test_a_row_no_rule_checks_fails_loudly() -> None:
    odd = Field(name="weight", json_type="integer", label="Weight", kind=Kind.text)
    with pytest.raises(ValueError, match="weight: no rule checks"):
        F._rule(odd)
    same = FIELD["notes"]
    assert F._rule(same)("notes", "ok", CTX) == "ok"


# --- docs/protocol.md, "Fields" -------------------------------------------------------


def _doc_row(spec: Field) -> str:
    if spec.choices is not None:
        kind, limits = "string", "one of " + " ".join(f"`{c.value}`" for c in spec.choices)
        rules = ["choice"]
    elif spec.member_of_branch:
        kind, limits = "integer or null", "the id of a member of the case's branch"
        rules = ["type", "member"]
        if spec.member_roles:
            limits = f"the id of an {' or '.join(spec.member_roles)} of the case's branch"
            rules.append("assignable")
    elif spec.json_type == "date":
        kind, limits = "`YYYY-MM-DD` or null", '`""` is null'
        if spec.not_future:
            limits += "; not after today in the branch's time zone"
        rules = ["type", "date"] + (["not_future"] if spec.not_future else [])
    else:
        assert spec.max_length is not None
        least = "1–" if spec.required else "≤ "
        kind = "string"
        limits = f"{least}{spec.max_length} characters, " + (
            "trimmed" if spec.trim else "kept verbatim"
        )
        if spec.email:
            limits += "; a valid email address or empty"
        rules = ["type", "characters", *(["required"] if spec.required else []), "max_length"]
        rules += ["email"] if spec.email else []
    return f"| `{spec.name}` | {kind} | {limits} | {' '.join(f'`{r}`' for r in rules)} |"


def test_the_protocol_documents_the_table() -> None:
    text = (Path(__file__).parent.parent / "docs" / "protocol.md").read_text()
    table = "\n".join(
        [
            "| field | JSON | limits | `rule` when refused |",
            "|---|---|---|---|",
            *(_doc_row(spec) for spec in EDITABLE),
        ]
    )
    assert table in text, f"docs/protocol.md, Fields, should have this table:\n{table}"
    read_only = ", ".join(f"`{name}`" for name in sorted(F.READ_ONLY, key=casefields.COLUMNS.index))
    assert read_only in " ".join(text.split())
