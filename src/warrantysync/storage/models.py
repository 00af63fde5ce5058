"""SQLAlchemy 2 models. Portable SQL only: SQLite, PostgreSQL and MySQL/MariaDB.

Strings that are indexed carry a length (MySQL needs one); JSON-ish payloads
are stored as text we encode ourselves, so every backend stores the same
bytes and the outbox can hand them to the stream unchanged.
"""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, MappedColumn, mapped_column
from sqlalchemy.types import TypeEngine

from ..casefields import FIELD, SEARCHABLE, SORTABLE, Priority, Status

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# Naive UTC with microseconds everywhere: MySQL/MariaDB's plain DATETIME
# would drop them, so a case read back would differ from the one answered.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table(model: type[Base]) -> Table:
    """A model's Core table, for the hot paths that skip the ORM's unit of work."""
    found: Table = Base.metadata.tables[model.__tablename__]
    return found


class Role(enum.StrEnum):
    viewer = "viewer"
    editor = "editor"
    manager = "manager"


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings (no native ENUM type), so adding a value is a
    # code change, not a schema migration on three databases.
    return Enum(cls, name=name, native_enum=False, length=20, validate_strings=True)


def _case_column(name: str, *args: Any, **kw: Any) -> MappedColumn[Any]:
    """A case's column as its field table says (casefields.py): length, TEXT or enum, default."""
    spec = FIELD[name]
    kind: TypeEngine[Any]
    if spec.choices is not None:
        kind = _enum(spec.choices, name)
    elif spec.text_column:
        kind = Text()
    elif spec.json_type == "string" and spec.max_length is not None:
        kind = String(spec.max_length)
    elif spec.json_type == "date":
        kind = Date()
    else:
        raise ValueError(f"{name}: the field table gives no column type for {spec!r}")
    return mapped_column(kind, *args, default=spec.default, **kw)


class Branch(Base):
    __tablename__ = "branches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    # Per-branch event counter, bumped in the transaction that writes an
    # outbox row: event ids are contiguous and in commit order
    # (docs/protocol.md, The event stream).
    last_event_id: Mapped[int] = mapped_column(BigInteger, default=0)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class Membership(Base):
    __tablename__ = "memberships"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    branch_id: Mapped[int] = mapped_column(
        ForeignKey("branches.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))


class Session(Base):
    """A browser login. Only the SHA-256 of the cookie value is stored."""

    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=None)


class ApiToken(Base):
    """A bearer token for scripts. Only the SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=None)


class Counter(Base):
    """Named counters bumped inside a transaction (e.g. ``case_number``)."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


class WarrantyCase(Base):
    __tablename__ = "warranty_cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    branch_id: Mapped[int] = mapped_column(ForeignKey("branches.id", ondelete="CASCADE"))
    case_number: Mapped[str] = _case_column("case_number", unique=True)
    customer_name: Mapped[str] = _case_column("customer_name")
    customer_phone: Mapped[str] = _case_column("customer_phone")
    customer_email: Mapped[str] = _case_column("customer_email")
    product: Mapped[str] = _case_column("product")
    serial_number: Mapped[str] = _case_column("serial_number")
    purchase_date: Mapped[dt.date | None] = _case_column("purchase_date")
    issue: Mapped[str] = _case_column("issue")
    status: Mapped[Status] = _case_column("status")
    priority: Mapped[Priority] = _case_column("priority")
    assignee_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    notes: Mapped[str] = _case_column("notes")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), default=None
    )
    # Deleted cases stay for their audit trail; every read filters them out.
    deleted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp, default=None)

    # The case list's indexes (migration 0004, docs/protocol.md "Listing cases"):
    # one ordered range of the branch's live cases per sortable column, and one
    # that holds every column the filters, the search and the sorts read. On
    # MariaDB, which has no partial indexes, the migration puts deleted_at
    # second instead of the WHERE.
    __table_args__ = (
        *(
            Index(
                f"ix_warranty_cases_list_{'id' if name == 'case_number' else name}",
                "branch_id",
                *([] if name == "case_number" else [name]),
                "id",
                postgresql_where=text("deleted_at IS NULL"),
                sqlite_where=text("deleted_at IS NULL"),
            )
            for name in SORTABLE
        ),
        Index(
            "ix_warranty_cases_search",
            "branch_id",
            "status",
            "assignee_id",
            "priority",
            "purchase_date",
            *SEARCHABLE,
            postgresql_where=text("deleted_at IS NULL"),
            sqlite_where=text("deleted_at IS NULL"),
        ),
        # The trash: deleted cases by when, for its list and the purge.
        Index(
            "ix_warranty_cases_trash",
            "deleted_at",
            "branch_id",
            postgresql_where=text("deleted_at IS NOT NULL"),
            sqlite_where=text("deleted_at IS NOT NULL"),
        ),
    )


class AuditEntry(Base):
    """One committed field change; written in the transaction of the change."""

    __tablename__ = "case_audit"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("warranty_cases.id", ondelete="CASCADE"))
    field: Mapped[str] = mapped_column(String(40))
    old: Mapped[str | None] = mapped_column(Text)  # JSON text
    new: Mapped[str | None] = mapped_column(Text)  # JSON text
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    version: Mapped[int] = mapped_column(Integer)
    # A restore from the history: the id of the entry whose value this one
    # brought back (docs/protocol.md, "Second chances"). No foreign key: both
    # rows belong to one case and go together when it is purged.
    restored_from: Mapped[int | None] = mapped_column(BigInteger, default=None)

    __table_args__ = (Index("ix_case_audit_case_version", "case_id", "version"),)


class OutboxEvent(Base):
    """A durable event: the log a resuming stream replays.

    ``data`` is the event's JSON exactly as it goes on the wire
    (docs/protocol.md, The event stream).
    """

    __tablename__ = "outbox"

    branch_id: Mapped[int] = mapped_column(
        ForeignKey("branches.id", ondelete="CASCADE"), primary_key=True
    )
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class Lease(Base):
    """A job only one node of a deployment may run at a time, until ``expires_at``.

    Taken with one conditional UPDATE (storage/leases.py), so the database
    decides between nodes racing for it.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class IdempotencyRecord(Base):
    """The first answer to a request with an ``Idempotency-Key`` (24 h)."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, index=True)


__all__ = [
    "ApiToken",
    "AuditEntry",
    "Base",
    "Branch",
    "Counter",
    "IdempotencyRecord",
    "Lease",
    "Membership",
    "OutboxEvent",
    "Priority",
    "Role",
    "Session",
    "Status",
    "User",
    "WarrantyCase",
    "table",
    "utcnow",
]
