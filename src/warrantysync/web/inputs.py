"""What a write request carries, parsed once at the edge: its JSON body and ``X-Client-Id``.

The bodies of a case's POST and PATCH are typed models, ``CaseFields`` and
``CasePatch``, which are also their OpenAPI schemas (web/openapi.py). Their
shape errors become the same
``{"error": "validation_error", "field", "rule"}`` answers as every other
422 (docs/protocol.md, Errors), checked in a fixed order: unknown members,
then ``changes``, ``expected`` and ``lock_tokens``. What the values of
``changes`` may be is the field table's business (casefields.py), checked by
the service, which knows the case's branch.

The body is decoded with orjson (jsonutil.py), as every body is, so what is
valid JSON is the same on every route; the model then checks the decoded
value.
"""

from __future__ import annotations

import string
from typing import Any, Literal

from fastapi import Request
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from ..casefields import EDITABLE
from ..errors import InvalidJson, ValidationFailed
from ..jsonutil import JSONDecodeError, loads
from ..services.restore import NOT_SENT

# [A-Za-z0-9_-] exactly: str.isalnum() would also let "é" or "²" through.
CLIENT_ID_CHARS = frozenset(string.ascii_letters + string.digits + "-_")
CLIENT_ID_RULE = "must be 1..64 letters, digits, '-' or '_'; one '.' may join two parts"


def valid_client_id(value: str) -> bool:
    """``[A-Za-z0-9_-]+``, or ``<connection>.<tab>`` (services/tabs.py); 64 characters at most."""
    if not 1 <= len(value) <= 64:
        return False
    parts = value.split(".")
    return len(parts) <= 2 and all(
        part and all(c in CLIENT_ID_CHARS for c in part) for part in parts
    )


def client_id_of(request: Request) -> str | None:
    """The tab a request comes from (``X-Client-Id``), if it says; a malformed one is a 422."""
    value = request.headers.get("x-client-id")
    if value is None:
        return None
    if not valid_client_id(value):
        raise ValidationFailed(
            f"X-Client-Id: {CLIENT_ID_RULE}",
            field="X-Client-Id",
            rule="client_id",
        )
    return value


def required_client_id(request: Request) -> str:
    """``X-Client-Id`` where it names the owner of a lock, so it must be sent."""
    client_id = client_id_of(request)
    if client_id is None:
        raise ValidationFailed(
            "X-Client-Id: required to own a lock", field="X-Client-Id", rule="required"
        )
    return client_id


def decode(raw: bytes) -> Any:
    try:
        return loads(raw)
    except JSONDecodeError:
        raise InvalidJson("the body is not valid JSON") from None


def parse_object(raw: bytes) -> dict[str, Any]:
    """A body that must be a JSON object (a login)."""
    value = decode(raw)
    if not isinstance(value, dict):
        raise ValidationFailed("body: must be a JSON object", field="body", rule="type")
    return value


NO_CHANGES = "changes: must name at least one field"
CASE_FIELDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {spec.name: spec.json_schema() for spec in EDITABLE},
    "additionalProperties": False,
}


def _case_fields_schema(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update(CASE_FIELDS_SCHEMA)


class CaseFields(RootModel[dict[str, Any]]):
    """Editable fields by name: a new case's values, or the ``changes`` of a PATCH.

    The values are checked by the rules of the field table (services/fields.py)
    in the service, which knows the case's branch; the schema comes from the
    same table.
    """

    model_config = ConfigDict(strict=True, json_schema_extra=_case_fields_schema)


class CasePatch(BaseModel):
    """The body of PATCH /api/cases/{case_id} (docs/protocol.md, PATCH)."""

    # Members are checked in this order; unknown members are reported first.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    changes: CaseFields
    expected: dict[str, Any] = Field(default_factory=dict)
    lock_tokens: dict[str, str] = Field(default_factory=dict)

    @field_validator("changes")
    @classmethod
    def _not_empty(cls, changes: CaseFields) -> CaseFields:
        if not changes.root:
            raise PydanticCustomError("required", NO_CHANGES)
        return changes

    @field_validator("lock_tokens", mode="before")
    @classmethod
    def _only_changed_fields(cls, tokens: Any, info: ValidationInfo) -> Any:
        # Before the values' type: a token for a field not being changed is
        # the first thing wrong with it.
        changes = info.data.get("changes")
        if isinstance(tokens, dict) and changes is not None:
            for field in tokens:
                if field not in changes.root:
                    raise PydanticCustomError(
                        "lock_tokens_without_change",
                        "names a field that is not in changes",
                        {"field": field},
                    )
        return tokens


class RestoreValue(BaseModel):
    """The body of POST /api/cases/{case_id}/history/{entry_id}/restore (docs/protocol.md)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    # The value the caller believes the field has now; left out: last-write-wins.
    expected: Any = None
    # Which of the entry's values comes back: the one it saved, or the one before.
    side: Literal["new", "old"] = "new"


def parse_restore(raw: bytes) -> tuple[Any, Literal["new", "old"]]:
    """A restore's ``expected`` (``NOT_SENT`` when it has none) and ``side``, or the 422."""
    value = decode(raw)
    try:
        body = RestoreValue.model_validate(value)
    except ValidationError as exc:
        raise _refusal(exc.errors(include_url=False, include_input=False)) from None
    expected = body.expected if "expected" in body.model_fields_set else NOT_SENT
    return expected, body.side


def parse_case_fields(raw: bytes) -> dict[str, Any]:
    """The body of a new case: its fields by name, or the 422 if it is no JSON object."""
    value = decode(raw)
    try:
        return CaseFields.model_validate(value).root
    except ValidationError as exc:
        raise _refusal(exc.errors(include_url=False, include_input=False)) from None


def parse_patch(raw: bytes) -> CasePatch:
    """The PATCH body, or the 422 of the first thing wrong with it."""
    value = decode(raw)
    try:
        return CasePatch.model_validate(value)
    except ValidationError as exc:
        raise _refusal(exc.errors(include_url=False, include_input=False)) from None


def _refusal(errors: list[ErrorDetails]) -> ValidationFailed:
    """The first of the model's errors as the contract words it."""
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = first["loc"]
    member = str(loc[0]) if loc else "body"
    match first["type"]:
        case "extra_forbidden":
            message = f"{member}: unknown member"
            return ValidationFailed(message, field=member, rule="unknown_member")
        case "missing" | "required":  # only `changes` is required
            return ValidationFailed(NO_CHANGES, field=member, rule="required")
        case "literal_error":  # a restore's side
            message = f"{member}: must be one of {first.get('ctx', {}).get('expected', '')}"
            return ValidationFailed(message, field=member, rule="choice")
        case "lock_tokens_without_change":
            field = str(first.get("ctx", {})["field"])
            message = f"lock_tokens.{field}: names a field that is not in changes"
            return ValidationFailed(message, field=field, rule="lock_tokens_without_change")
        case _ if len(loc) > 1:  # inside a member: only lock_tokens' values have a type
            return ValidationFailed(f"{member}: values must be strings", field=member, rule="type")
        case _:
            return ValidationFailed(f"{member}: must be a JSON object", field=member, rule="type")


__all__ = [
    "CaseFields",
    "CasePatch",
    "RestoreValue",
    "client_id_of",
    "parse_case_fields",
    "parse_object",
    "parse_patch",
    "parse_restore",
    "required_client_id",
]
