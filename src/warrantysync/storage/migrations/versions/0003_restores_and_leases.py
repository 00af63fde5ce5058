"""restores in the history, and leases for jobs one node runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 09:30:00

``case_audit.restored_from`` names the history entry whose value a restore
brought back (docs/protocol.md, "Second chances"); older rows are null. The
``leases`` table lets one node of a deployment claim a periodic job (the
trash purge) for a while.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# As storage/models.py's Timestamp: microseconds on MySQL/MariaDB too.
TIMESTAMP = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    with op.batch_alter_table("case_audit", schema=None) as batch_op:
        batch_op.add_column(sa.Column("restored_from", sa.BigInteger(), nullable=True))
    op.create_table(
        "leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leases")),
    )


def downgrade() -> None:
    op.drop_table("leases")
    with op.batch_alter_table("case_audit", schema=None) as batch_op:
        batch_op.drop_column("restored_from")
