"""indexes for the paged, sorted and searched case list

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:30:00

A branch with years of cases (tens of thousands of rows) is listed a page at
a time, in the order the user picked, with filters and a search
(docs/protocol.md, "Listing cases"). Each sortable column gets an index of the
branch's live cases in that column's order, so a page is one ordered index
range whatever the sort; ``id`` closes each one because it breaks ties (the
keyset cursor) and PostgreSQL, unlike SQLite and InnoDB, does not append the
key to an index on its own. One wide index holds every column the filters,
the search and the sorts read, so a search (which must test every row) is
counted and ordered from that index alone, never from the table rows with
their long notes. The list of all live cases by ``id`` replaces the old
``(branch_id, deleted_at)``; the trash (deleted cases, listed by when they
were deleted and purged once old enough) gets an index of the deleted rows
alone, ordered by ``deleted_at``.

"Live" is ``deleted_at IS NULL``. SQLite and PostgreSQL index only the live
rows (a partial index): PostgreSQL does not take ``IS NULL`` as pinning a
column, so ``(branch_id, deleted_at, column)`` would not give it the order
of ``column``. MariaDB has no partial indexes but does pin it, so there
``deleted_at`` is the index's second column.

Every column here has a declared maximum length, so the widest entry fits
MySQL's 3072-byte key limit and PostgreSQL's B-tree entry limit.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op

log = logging.getLogger("alembic.runtime.migration")

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLE = "warranty_cases"
SORTED = [
    "customer_name",
    "customer_phone",
    "customer_email",
    "product",
    "serial_number",
    "purchase_date",
    "status",
    "priority",
    "assignee_id",
]
SEARCH = [
    "status",
    "assignee_id",
    "priority",
    "purchase_date",
    "case_number",
    "customer_name",
    "customer_phone",
    "customer_email",
    "product",
    "serial_number",
]

# The searched columns (casefields.SEARCHABLE when this was written).
TRIGRAMS = SEARCH[4:]


def _lead() -> list[str]:
    mysql = op.get_bind().dialect.name in ("mysql", "mariadb")
    return ["branch_id", "deleted_at"] if mysql else ["branch_id"]


def _index(name: str, columns: list[str]) -> None:
    live = sa.text("deleted_at IS NULL")
    op.create_index(name, TABLE, [*_lead(), *columns], postgresql_where=live, sqlite_where=live)


def upgrade() -> None:
    # New before old: on MySQL the branch's foreign key needs an index that
    # starts with branch_id at every moment.
    _index("ix_warranty_cases_list_id", ["id"])
    for column in SORTED:
        _index(f"ix_warranty_cases_list_{column}", [column, "id"])
    _index("ix_warranty_cases_search", SEARCH)
    deleted = sa.text("deleted_at IS NOT NULL")
    op.create_index(
        "ix_warranty_cases_trash",
        TABLE,
        ["deleted_at", "branch_id"],
        postgresql_where=deleted,
        sqlite_where=deleted,
    )
    op.drop_index("ix_warranty_cases_branch_live", table_name=TABLE)
    if op.get_bind().dialect.name == "postgresql":
        _trigrams()


def _trigrams() -> None:
    """PostgreSQL: a trigram index, so a search finds its matches without reading every row.

    ``pg_trgm`` ships with PostgreSQL and is a trusted extension (13 and
    later): the database's owner may create it. Where it cannot be created,
    searching works all the same, testing each live row of the branch.
    """
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except sa.exc.DBAPIError as exc:
        log.warning("no trigram index for searching cases (pg_trgm: %s)", exc.orig)
        return
    columns = ", ".join(f"{name} gin_trgm_ops" for name in TRIGRAMS)
    bind.exec_driver_sql(
        f"CREATE INDEX ix_warranty_cases_trigrams ON {TABLE} USING gin ({columns})"
        " WHERE deleted_at IS NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_warranty_cases_trigrams")
    op.create_index("ix_warranty_cases_branch_live", TABLE, ["branch_id", "deleted_at"])
    op.drop_index("ix_warranty_cases_trash", table_name=TABLE)
    op.drop_index("ix_warranty_cases_search", table_name=TABLE)
    for column in reversed(SORTED):
        op.drop_index(f"ix_warranty_cases_list_{column}", table_name=TABLE)
    op.drop_index("ix_warranty_cases_list_id", table_name=TABLE)
