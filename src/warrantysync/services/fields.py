"""The rules of a warranty case's editable fields, built from its field table.

``casefields.FIELDS`` says what each field allows; this turns that into one
rule per field. A rule turns a JSON value into the stored Python value or
raises ``ValidationFailed`` naming the field and the rule broken (the
``field`` and ``rule`` of a 422, docs/protocol.md, Errors).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from ..casefields import EDITABLE as EDITABLE_FIELDS
from ..casefields import FIELDS, Field, Save
from ..errors import ValidationFailed

Rule = Callable[[str, Any, "Context"], Any]


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule may need to know beyond the value itself."""

    timezone: str
    # The branch's members: user id -> role ("viewer", "editor", "manager").
    members: Mapping[int, str]

    def today(self) -> dt.date:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return dt.datetime.now(zone).date()


def _fail(field: str, rule: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", field=field, rule=rule)


def _text(max_len: int, *, min_len: int, trim: bool) -> Rule:
    def rule(field: str, value: Any, _ctx: Context) -> str:
        if not isinstance(value, str):
            raise _fail(field, "type", "must be a string")
        text: str = value.strip() if trim else value
        if "\x00" in text:
            raise _fail(field, "characters", "must not contain NUL characters")
        if len(text) < min_len:
            raise _fail(field, "required", "must not be empty")
        if len(text) > max_len:
            raise _fail(field, "max_length", f"must be at most {max_len} characters")
        return text

    return rule


def _email(text_rule: Rule) -> Rule:
    def rule(field: str, value: Any, ctx: Context) -> str:
        text: str = text_rule(field, value, ctx)
        if not text:
            return text
        try:
            validate_email(text, check_deliverability=False)
        except EmailNotValidError as exc:
            raise _fail(field, "email", f"is not a valid email address ({exc})") from None
        return text

    return rule


def _date(*, not_future: bool) -> Rule:
    def rule(field: str, value: Any, ctx: Context) -> dt.date | None:
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise _fail(field, "type", "must be a date YYYY-MM-DD or null")
        try:
            parsed = dt.date.fromisoformat(value)
        except ValueError:
            raise _fail(field, "date", "must be a date YYYY-MM-DD") from None
        if len(value) != 10:
            raise _fail(field, "date", "must be a date YYYY-MM-DD")
        if not_future and parsed > ctx.today():
            raise _fail(field, "not_future", "must not be after today")
        return parsed

    return rule


def _choice(enum_cls: type[StrEnum]) -> Rule:
    allowed = [member.value for member in enum_cls]

    def rule(field: str, value: Any, _ctx: Context) -> StrEnum:
        if not isinstance(value, str) or value not in allowed:
            raise _fail(field, "choice", f"must be one of {', '.join(allowed)}")
        return enum_cls(value)

    return rule


def _member(roles: Collection[str]) -> Rule:
    wording = " or ".join(roles)

    def rule(field: str, value: Any, ctx: Context) -> int | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(field, "type", "must be a user id or null")
        role = ctx.members.get(value)
        if role is None:
            raise _fail(field, "member", "must be a member of the case's branch")
        if roles and role not in roles:
            raise _fail(field, "assignable", f"must be an {wording} of the case's branch")
        return value

    return rule


def _rule(spec: Field) -> Rule:
    """The rule for one row of the table; a row no rule implements fails at import."""
    if spec.choices is not None:
        return _choice(spec.choices)
    if spec.json_type == "string" and spec.max_length is not None:
        text = _text(spec.max_length, min_len=1 if spec.required else 0, trim=spec.trim)
        return _email(text) if spec.email else text
    if spec.json_type == "date" and spec.nullable:
        return _date(not_future=spec.not_future)
    if spec.json_type == "integer" and spec.nullable and spec.member_of_branch:
        return _member(spec.member_roles)
    raise ValueError(f"{spec.name}: no rule checks a field like {spec!r}")


RULES: Mapping[str, Rule] = {spec.name: _rule(spec) for spec in EDITABLE_FIELDS}
EDITABLE = frozenset(RULES)
READ_ONLY = frozenset(spec.name for spec in FIELDS if not spec.editable)
# The only rules that read the Context; a change to other fields validates
# without it, so a save of a text field skips the queries that build it.
CONTEXT_FIELDS = frozenset(spec.name for spec in EDITABLE_FIELDS if spec.needs_branch)
# Saved at once by the client; the others are debounced.
IMMEDIATE = frozenset(spec.name for spec in EDITABLE_FIELDS if spec.save is Save.immediate)


def check_field_name(field: Any) -> str:
    if not isinstance(field, str) or field not in RULES:
        if isinstance(field, str) and field in READ_ONLY:
            raise ValidationFailed(f"{field}: is read-only", field=field, rule="read_only")
        raise ValidationFailed(f"{field}: unknown field", field=str(field), rule="unknown_field")
    return field


def validate(changes: Mapping[str, Any], ctx: Context) -> dict[str, Any]:
    """Validate every entry; the first broken rule raises."""
    clean: dict[str, Any] = {}
    for field, value in changes.items():
        check_field_name(field)
        clean[field] = RULES[field](field, value, ctx)
    return clean


def check_subset(name: str, entries: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """``expected`` and ``lock_tokens`` may only name fields being changed."""
    for field in entries:
        if field not in changes:
            raise ValidationFailed(
                f"{name}.{field}: names a field that is not in changes",
                field=str(field),
                rule=f"{name}_without_change",
            )


def to_json(value: Any) -> Any:
    """The JSON form of a stored field value (timestamps are naive UTC)."""
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, StrEnum):
        return value.value
    return value
