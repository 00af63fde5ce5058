"""The fields of a warranty case: one table, read by every layer.

Every field of a case's JSON (docs/protocol.md, Cases), in the order that JSON
lists them, with its type, its limits, whether and how it is edited, and the
label the page shows. The rest is built from this table and nothing else:

* ``services/fields.py`` — the validator of each editable field;
* ``storage/models.py`` — the column lengths, TEXT columns and defaults;
* ``services/cases.py`` — the columns a case's JSON is read from;
* ``web/inputs.py`` and ``web/openapi.py`` — the CaseFields and Case schemas
  (``Field.json_schema``);
* ``web/routes/pages.py`` — the ``fields`` member of the branch page's config,
  which ``static/js/fields.js`` answers every browser module from.

It imports nothing of the package, so ``storage/`` can use it without
pointing up a layer. Migrations keep their literal values: they are history.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

JsonType = Literal["string", "integer", "date", "timestamp"]


class Status(enum.StrEnum):
    new = "new"
    diagnosing = "diagnosing"
    awaiting_parts = "awaiting_parts"
    in_repair = "in_repair"
    ready = "ready"
    closed = "closed"
    rejected = "rejected"


class Priority(enum.StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    urgent = "urgent"


class Kind(enum.StrEnum):
    """The control the page edits a field with."""

    text = "text"
    multiline = "multiline"
    select = "select"
    date = "date"


class Save(enum.StrEnum):
    debounced = "debounced"
    immediate = "immediate"


# Typing saves once the user pauses; a pick from a list or a calendar is
# already the final value, so it saves at once (README.md, "What you get").
SAVE_MODES: Mapping[Kind, Save] = MappingProxyType(
    {
        Kind.text: Save.debounced,
        Kind.multiline: Save.debounced,
        Kind.select: Save.immediate,
        Kind.date: Save.immediate,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One field of a case. A field without a ``kind`` is read-only."""

    name: str
    json_type: JsonType
    label: str
    kind: Kind | None = None
    max_length: int | None = None
    # At least one character (after trimming): the "required" rule.
    required: bool = False
    # Leading and trailing whitespace is dropped before the checks.
    trim: bool = False
    email: bool = False
    choices: type[enum.StrEnum] | None = None
    nullable: bool = False
    # A date not after today in the case's branch's time zone.
    not_future: bool = False
    # A user id of a member of the case's branch...
    member_of_branch: bool = False
    # ...whose role there is one of these (empty: any role).
    member_roles: tuple[str, ...] = ()
    minimum: int | None = None
    # Stored as TEXT rather than VARCHAR(max_length): the validator alone
    # keeps the limit, so raising it needs no migration.
    text_column: bool = False
    # The stored value of a case created without this field (None: none).
    default: Any = None
    # The case list can be ordered by it (``sort``) and ``q`` searches it
    # (docs/protocol.md, "Listing cases"); each sortable field has an index.
    sortable: bool = False
    searchable: bool = False

    @property
    def editable(self) -> bool:
        return self.kind is not None

    @property
    def save(self) -> Save | None:
        return None if self.kind is None else SAVE_MODES[self.kind]

    @property
    def needs_branch(self) -> bool:
        """Whether a rule of this field reads the case's branch (its zone, its members)."""
        return self.not_future or self.member_of_branch

    def json_schema(self) -> dict[str, Any]:
        """This field's JSON Schema, as the OpenAPI document describes it."""
        schema: dict[str, Any]
        if self.json_type == "integer":
            schema = {"type": "integer"}
            if self.minimum is not None:
                schema["minimum"] = self.minimum
        elif self.json_type == "date":
            schema = {"type": "string", "format": "date"}
        else:
            schema = {"type": "string"}
            if self.choices is not None:
                schema["enum"] = [choice.value for choice in self.choices]
            if self.required:
                schema["minLength"] = 1
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
        return {"anyOf": [schema, {"type": "null"}]} if self.nullable else schema

    def for_client(self) -> dict[str, Any]:
        """What the browser knows of this field (the page config's ``fields``)."""
        default = self.default.value if isinstance(self.default, enum.Enum) else self.default
        return {
            "name": self.name,
            "label": self.label,
            "json_type": self.json_type,
            "editable": self.editable,
            "kind": None if self.kind is None else self.kind.value,
            "save": None if self.save is None else self.save.value,
            "max_length": self.max_length,
            "required": self.required,
            "nullable": self.nullable,
            "choices": None if self.choices is None else [c.value for c in self.choices],
            "not_future": self.not_future,
            "member_of_branch": self.member_of_branch,
            "member_roles": list(self.member_roles),
            "default": default,
            "sortable": self.sortable,
            "searchable": self.searchable,
        }


def _text(name: str, label: str, max_length: int, **rules: Any) -> Field:
    rules.setdefault("trim", True)
    rules.setdefault("default", "")
    rules.setdefault("sortable", True)
    rules.setdefault("searchable", True)
    return Field(
        name=name, json_type="string", label=label, kind=Kind.text, max_length=max_length, **rules
    )


def _multiline(name: str, label: str, max_length: int) -> Field:
    # Kept verbatim: indentation and blank lines are the writer's.
    return Field(
        name=name,
        json_type="string",
        label=label,
        kind=Kind.multiline,
        max_length=max_length,
        text_column=True,
        default="",
    )


def _choice(name: str, label: str, choices: type[enum.StrEnum], default: enum.StrEnum) -> Field:
    return Field(
        name=name,
        json_type="string",
        label=label,
        kind=Kind.select,
        choices=choices,
        default=default,
        sortable=True,
    )


FIELDS: tuple[Field, ...] = (
    Field(name="id", json_type="integer", label="ID"),
    Field(name="branch_id", json_type="integer", label="Branch"),
    # Numbers are handed out in creation order, so sorting by them sorts by id.
    Field(
        name="case_number",
        json_type="string",
        label="Case",
        max_length=20,
        sortable=True,
        searchable=True,
    ),
    _text("customer_name", "Customer", 120, required=True, default=None),
    _text("customer_phone", "Phone", 40),
    _text("customer_email", "Email", 254, email=True),
    _text("product", "Product", 120),
    _text("serial_number", "Serial no.", 80),
    Field(
        name="purchase_date",
        json_type="date",
        label="Purchased",
        kind=Kind.date,
        nullable=True,
        not_future=True,
        sortable=True,
    ),
    _multiline("issue", "Issue", 2000),
    _choice("status", "Status", Status, Status.new),
    _choice("priority", "Priority", Priority, Priority.normal),
    Field(
        name="assignee_id",
        json_type="integer",
        label="Assignee",
        kind=Kind.select,
        nullable=True,
        member_of_branch=True,
        # Whoever works on a case must be able to edit it: never a viewer.
        member_roles=("editor", "manager"),
        sortable=True,
    ),
    _multiline("notes", "Notes", 5000),
    Field(name="version", json_type="integer", label="Version", minimum=1),
    Field(name="created_at", json_type="timestamp", label="Created"),
    Field(name="updated_at", json_type="timestamp", label="Updated"),
    Field(name="updated_by", json_type="integer", label="Updated by", nullable=True),
)
FIELD: Mapping[str, Field] = MappingProxyType({field.name: field for field in FIELDS})
# The members of a case's JSON, in order.
COLUMNS: tuple[str, ...] = tuple(field.name for field in FIELDS)
EDITABLE: tuple[Field, ...] = tuple(field for field in FIELDS if field.editable)
SORTABLE: tuple[str, ...] = tuple(field.name for field in FIELDS if field.sortable)
SEARCHABLE: tuple[str, ...] = tuple(field.name for field in FIELDS if field.searchable)


def client_table() -> list[dict[str, Any]]:
    """The table as the branch page sends it to the browser."""
    return [field.for_client() for field in FIELDS]


__all__ = [
    "COLUMNS",
    "EDITABLE",
    "FIELD",
    "FIELDS",
    "SEARCHABLE",
    "SORTABLE",
    "Field",
    "Kind",
    "Priority",
    "Save",
    "Status",
    "client_table",
]
