"""indexes for the paged, sorted and searched case list

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:30:00

A branch with years of cases (tens of thousands of rows) is listed a page at
a time, in the order the user picked, with filters and a search
(docs/protocol.md, "Listing cases"). Each sortable column gets an index that
leads with the branch and the live-row test, so a page is one ordered index
range whatever the sort; ``id`` closes each one because it breaks ties (the
keyset cursor) and PostgreSQL, unlike SQLite and InnoDB, does not append the
key to an index on its own. One wide index holds every column the filters and
the search read, so counting the matches of a search never touches the table
rows with their long notes. ``(branch_id, deleted_at, id)`` replaces the old
``(branch_id, deleted_at)``.

Every column here has a declared maximum length, so the widest entry fits
MySQL's 3072-byte key limit and PostgreSQL's B-tree entry limit.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TABLE = "warranty_cases"
LEAD = ["branch_id", "deleted_at"]
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
    "case_number",
    "customer_name",
    "customer_phone",
    "customer_email",
    "product",
    "serial_number",
]


def upgrade() -> None:
    # New before old: on MySQL the branch's foreign key needs an index that
    # starts with branch_id at every moment.
    op.create_index("ix_warranty_cases_list_id", TABLE, [*LEAD, "id"])
    for column in SORTED:
        op.create_index(f"ix_warranty_cases_list_{column}", TABLE, [*LEAD, column, "id"])
    op.create_index("ix_warranty_cases_search", TABLE, [*LEAD, *SEARCH])
    op.drop_index("ix_warranty_cases_branch_live", table_name=TABLE)


def downgrade() -> None:
    op.create_index("ix_warranty_cases_branch_live", TABLE, LEAD)
    op.drop_index("ix_warranty_cases_search", table_name=TABLE)
    for column in reversed(SORTED):
        op.drop_index(f"ix_warranty_cases_list_{column}", table_name=TABLE)
    op.drop_index("ix_warranty_cases_list_id", table_name=TABLE)
