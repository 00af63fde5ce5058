"""services/fields.py: the rules of every editable field (docs/protocol.md, Fields), no database."""

from __future__ import annotations

import datetime as dt
from typing import cast
from zoneinfo import ZoneInfo

import pytest

from warrantysync.errors import ValidationFailed
from warrantysync.services import fields as F
from warrantysync.storage.models import Priority, Status

CTX = F.Context(timezone="UTC", members={1: "editor", 2: "manager", 4: "viewer"})

TEXT_LIMITS = {
    "customer_name": 120,
    "customer_phone": 40,
    "product": 120,
    "serial_number": 80,
    "issue": 2000,
    "notes": 5000,
}


def refused(changes: dict[str, object], ctx: F.Context = CTX) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as caught:
        F.validate(changes, ctx)
    return caught.value


def test_editable_fields_are_exactly_the_contract() -> None:
    assert {
        "customer_name",
        "customer_phone",
        "customer_email",
        "product",
        "serial_number",
        "purchase_date",
        "issue",
        "status",
        "priority",
        "assignee_id",
        "notes",
    } == F.EDITABLE
    assert not F.EDITABLE & F.READ_ONLY
    assert {"purchase_date", "status", "priority", "assignee_id"} == F.IMMEDIATE


@pytest.mark.parametrize(("field", "limit"), sorted(TEXT_LIMITS.items()))
def test_text_field_length_limit(field: str, limit: int) -> None:
    assert F.validate({field: "x" * limit}, CTX) == {field: "x" * limit}
    error = refused({field: "x" * (limit + 1)})
    assert error.extra == {"field": field, "rule": "max_length"}
    assert field in error.message and str(limit) in error.message


@pytest.mark.parametrize("field", sorted(TEXT_LIMITS))
def test_text_field_must_be_a_string(field: str) -> None:
    for value in (5, None, ["a"], {"a": 1}, True):
        error = refused({field: value})
        assert error.extra == {"field": field, "rule": "type"}


def test_text_limits_count_characters_not_bytes() -> None:
    assert F.validate({"customer_phone": "é" * 40}, CTX) == {"customer_phone": "é" * 40}


def test_customer_name_is_trimmed_and_required() -> None:
    assert F.validate({"customer_name": "  Ann Lee \n"}, CTX) == {"customer_name": "Ann Lee"}
    for blank in ("", "   ", "\t\n"):
        error = refused({"customer_name": blank})
        assert error.extra == {"field": "customer_name", "rule": "required"}
    # The limit applies after trimming.
    assert F.validate({"customer_name": " " + "x" * 120 + " "}, CTX)["customer_name"] == "x" * 120


def test_single_line_texts_are_trimmed_long_texts_kept_verbatim() -> None:
    clean = F.validate({"product": " Kettle ", "issue": "  line 1\n", "notes": "\n- a\n"}, CTX)
    assert clean == {"product": "Kettle", "issue": "  line 1\n", "notes": "\n- a\n"}


def test_optional_texts_may_be_empty() -> None:
    for field in ("customer_phone", "product", "serial_number", "issue", "notes"):
        assert F.validate({field: ""}, CTX) == {field: ""}


def test_nul_characters_are_refused() -> None:
    error = refused({"notes": "a\x00b"})
    assert error.extra == {"field": "notes", "rule": "characters"}


def test_email_valid_empty_and_invalid() -> None:
    assert F.validate({"customer_email": "ann@example.com"}, CTX) == {
        "customer_email": "ann@example.com"
    }
    assert F.validate({"customer_email": ""}, CTX) == {"customer_email": ""}
    assert F.validate({"customer_email": "  ann@example.com "}, CTX) == {
        "customer_email": "ann@example.com"
    }
    for bad in ("not-an-email", "a@", "@example.com", "a b@example.com", "ann@@example.com"):
        error = refused({"customer_email": bad})
        assert error.extra == {"field": "customer_email", "rule": "email"}, bad
        assert "customer_email" in error.message
    error = refused({"customer_email": 7})
    assert error.extra == {"field": "customer_email", "rule": "type"}


def test_email_length_limit() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 60] * 3) + ".com"  # 184 + 1 + 64 = 249 characters with "@"
    assert len(f"{local}@{domain}") <= 254
    assert F.validate({"customer_email": f"{local}@{domain}"}, CTX)
    too_long = "a" * 64 + "@" + "b" * 190 + ".com"
    assert len(too_long) > 254
    error = refused({"customer_email": too_long})
    assert error.extra["field"] == "customer_email"


def test_purchase_date_valid_null_and_today() -> None:
    today = CTX.today()
    assert F.validate({"purchase_date": "2024-02-29"}, CTX) == {
        "purchase_date": dt.date(2024, 2, 29)
    }
    assert F.validate({"purchase_date": today.isoformat()}, CTX) == {"purchase_date": today}
    assert F.validate({"purchase_date": None}, CTX) == {"purchase_date": None}
    assert F.validate({"purchase_date": ""}, CTX) == {"purchase_date": None}


@pytest.mark.parametrize(
    "bad", ["2023-02-29", "2024-13-01", "01/02/2024", "2024-1-2", "20240102", "yesterday", "x"]
)
def test_purchase_date_bad_format(bad: str) -> None:
    error = refused({"purchase_date": bad})
    assert error.extra == {"field": "purchase_date", "rule": "date"}


def test_purchase_date_wrong_type() -> None:
    for bad in (20240102, ["2024-01-02"], True):
        error = refused({"purchase_date": bad})
        assert error.extra == {"field": "purchase_date", "rule": "type"}


def test_purchase_date_not_after_today_in_the_branch_zone() -> None:
    for zone in ("UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Europe/Berlin"):
        ctx = F.Context(timezone=zone, members={})
        today = dt.datetime.now(ZoneInfo(zone)).date()
        assert ctx.today() == today
        assert F.validate({"purchase_date": today.isoformat()}, ctx)
        error = refused({"purchase_date": (today + dt.timedelta(days=1)).isoformat()}, ctx)
        assert error.extra == {"field": "purchase_date", "rule": "not_future"}


def test_the_zone_decides_what_today_is() -> None:
    # UTC+14 and UTC-11 are always on different dates: 25 hours apart.
    east = F.Context(timezone="Pacific/Kiritimati", members={})
    west = F.Context(timezone="Pacific/Pago_Pago", members={})
    assert east.today() > west.today()
    assert F.validate({"purchase_date": east.today().isoformat()}, east)
    refused({"purchase_date": east.today().isoformat()}, west)


def test_unknown_zone_falls_back_to_utc() -> None:
    ctx = F.Context(timezone="Not/AZone", members={})
    assert ctx.today() == dt.datetime.now(dt.UTC).date()


def test_enums() -> None:
    for status in Status:
        assert F.validate({"status": status.value}, CTX) == {"status": status}
    for priority in Priority:
        assert F.validate({"priority": priority.value}, CTX) == {"priority": priority}
    assert [s.value for s in Status] == [
        "new",
        "diagnosing",
        "awaiting_parts",
        "in_repair",
        "ready",
        "closed",
        "rejected",
    ]
    assert [p.value for p in Priority] == ["low", "normal", "high", "urgent"]
    for field, bad in (
        ("status", "open"),
        ("status", "NEW"),
        ("status", ""),
        ("status", None),
        ("priority", "critical"),
        ("priority", 1),
    ):
        error = refused({field: bad})
        assert error.extra == {"field": field, "rule": "choice"}
        assert "must be one of" in error.message


def test_assignee() -> None:
    assert F.validate({"assignee_id": 1}, CTX) == {"assignee_id": 1}
    assert F.validate({"assignee_id": 2}, CTX) == {"assignee_id": 2}
    assert F.validate({"assignee_id": None}, CTX) == {"assignee_id": None}
    error = refused({"assignee_id": 3})
    assert error.extra == {"field": "assignee_id", "rule": "member"}
    # A viewer is a member but cannot work on a case.
    error = refused({"assignee_id": 4})
    assert error.extra == {"field": "assignee_id", "rule": "assignable"}
    assert "editor or manager" in error.message
    for bad in ("1", 1.5, True, [1]):
        error = refused({"assignee_id": bad})
        assert error.extra == {"field": "assignee_id", "rule": "type"}, bad


class _Unreadable:
    """A context whose every attribute read fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the rule read ctx.{name}")


VALID = {
    "customer_name": "Ann",
    "customer_phone": "+1 555",
    "customer_email": "ann@example.com",
    "product": "Phone",
    "serial_number": "SN1",
    "purchase_date": "2020-01-01",
    "issue": "cracked",
    "status": "new",
    "priority": "low",
    "assignee_id": 1,
    "notes": "n",
}


def test_only_the_context_fields_read_the_context() -> None:
    # PATCH skips the queries that build the context unless one of these changes.
    unreadable = cast(F.Context, _Unreadable())
    assert set(VALID) == F.EDITABLE
    for field in F.EDITABLE - F.CONTEXT_FIELDS:
        F.validate({field: VALID[field]}, unreadable)
    for field in F.CONTEXT_FIELDS:
        with pytest.raises(AssertionError, match="the rule read ctx"):
            F.validate({field: VALID[field]}, unreadable)


def test_unknown_and_read_only_field_names() -> None:
    error = refused({"colour": "red"})
    assert error.extra == {"field": "colour", "rule": "unknown_field"}
    assert "colour" in error.message
    for field in sorted(F.READ_ONLY):
        error = refused({field: 1})
        assert error.extra == {"field": field, "rule": "read_only"}
        assert field in error.message
    assert F.check_field_name("notes") == "notes"
    with pytest.raises(ValidationFailed):
        F.check_field_name(3)


def test_validate_names_the_first_broken_field_and_returns_clean_values() -> None:
    clean = F.validate({"status": "ready", "customer_name": " Bo ", "purchase_date": None}, CTX)
    assert clean == {"status": Status.ready, "customer_name": "Bo", "purchase_date": None}
    error = refused({"status": "ready", "priority": "meh", "product": 5})
    assert error.extra["field"] == "priority"


def test_check_subset() -> None:
    F.check_subset("expected", {"notes": "a"}, {"notes": "b", "status": "new"})
    F.check_subset("expected", {}, {"notes": "b"})
    with pytest.raises(ValidationFailed) as caught:
        F.check_subset("lock_tokens", {"status": "t"}, {"notes": "b"})
    assert caught.value.extra == {"field": "status", "rule": "lock_tokens_without_change"}
    assert "lock_tokens.status" in caught.value.message


def test_to_json() -> None:
    assert F.to_json(dt.date(2024, 5, 6)) == "2024-05-06"
    assert F.to_json(Status.in_repair) == "in_repair"
    assert F.to_json(Priority.urgent) == "urgent"
    assert F.to_json(None) is None
    assert F.to_json(7) == 7
    assert F.to_json("x") == "x"
