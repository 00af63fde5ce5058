"""The editable fields of a warranty case and their rules (DESIGN §2).

Each rule turns a JSON value into the stored Python value or raises
``ValidationFailed`` naming the field and the rule broken.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email

from ..errors import ValidationFailed
from ..storage.models import Priority, Status

READ_ONLY = frozenset(
    {"id", "branch_id", "case_number", "version", "created_at", "updated_at", "updated_by"}
)


@dataclass(frozen=True, slots=True)
class Context:
    """What a rule may need to know beyond the value itself."""

    timezone: str
    member_ids: Collection[int]

    def today(self) -> dt.date:
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return dt.datetime.now(zone).date()


def _fail(field: str, rule: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", field=field, rule=rule)


def _text(
    max_len: int, *, min_len: int = 0, trim: bool = True
) -> Callable[[str, Any, Context], str]:
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


def _email(field: str, value: Any, ctx: Context) -> str:
    text = _text(254)(field, value, ctx)
    if not text:
        return text
    try:
        validate_email(text, check_deliverability=False)
    except EmailNotValidError as exc:
        raise _fail(field, "email", f"is not a valid email address ({exc})") from None
    return text


def _date(field: str, value: Any, ctx: Context) -> dt.date | None:
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
    if parsed > ctx.today():
        raise _fail(field, "not_future", "must not be after today")
    return parsed


def _choice(enum_cls: type[Status] | type[Priority]) -> Callable[..., Any]:
    allowed = [member.value for member in enum_cls]

    def rule(field: str, value: Any, _ctx: Context) -> Any:
        if not isinstance(value, str) or value not in allowed:
            raise _fail(field, "choice", f"must be one of {', '.join(allowed)}")
        return enum_cls(value)

    return rule


def _assignee(field: str, value: Any, ctx: Context) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, "type", "must be a user id or null")
    if value not in ctx.member_ids:
        raise _fail(field, "member", "must be a member of the case's branch")
    return value


RULES: Mapping[str, Callable[[str, Any, Context], Any]] = {
    "customer_name": _text(120, min_len=1),
    "customer_phone": _text(40),
    "customer_email": _email,
    "product": _text(120),
    "serial_number": _text(80),
    "purchase_date": _date,
    "issue": _text(2000, trim=False),
    "status": _choice(Status),
    "priority": _choice(Priority),
    "assignee_id": _assignee,
    "notes": _text(5000, trim=False),
}
EDITABLE = frozenset(RULES)
# The only rules that read the Context; a change to other fields validates
# without it, so a save of a text field skips the queries that build it.
CONTEXT_FIELDS = frozenset({"purchase_date", "assignee_id"})
# Saved at once by the client; text fields are debounced (DESIGN §2).
IMMEDIATE = frozenset({"purchase_date", "status", "priority", "assignee_id"})


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
    if isinstance(value, Status | Priority):
        return value.value
    return value
