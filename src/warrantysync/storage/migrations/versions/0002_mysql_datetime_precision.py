"""microsecond timestamps on MySQL/MariaDB

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 22:40:00

``DATETIME`` on MySQL and MariaDB keeps whole seconds (MySQL even rounds), so
a case read back differed from the one a PATCH answered. ``DATETIME(6)``
keeps microseconds, as SQLite and PostgreSQL already do. Nothing changes on
the other databases.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# (table, column, nullable)
COLUMNS = [
    ("users", "created_at", False),
    ("sessions", "created_at", False),
    ("sessions", "last_seen_at", False),
    ("sessions", "revoked_at", True),
    ("api_tokens", "created_at", False),
    ("api_tokens", "revoked_at", True),
    ("warranty_cases", "created_at", False),
    ("warranty_cases", "updated_at", False),
    ("warranty_cases", "deleted_at", True),
    ("case_audit", "at", False),
    ("outbox", "created_at", False),
    ("idempotency_keys", "created_at", False),
]


def _is_mysql() -> bool:
    return op.get_bind().dialect.name in ("mysql", "mariadb")


def upgrade() -> None:
    if not _is_mysql():
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(
            table,
            column,
            existing_type=sa.DateTime(),
            type_=mysql.DATETIME(fsp=6),
            existing_nullable=nullable,
        )


def downgrade() -> None:
    if not _is_mysql():
        return
    for table, column, nullable in COLUMNS:
        op.alter_column(
            table,
            column,
            existing_type=mysql.DATETIME(fsp=6),
            type_=sa.DateTime(),
            existing_nullable=nullable,
        )
