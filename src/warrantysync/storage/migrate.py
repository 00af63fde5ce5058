"""Schema migrations (Alembic), run by ``warrantysync db upgrade``."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would choke on '%' in URL-encoded passwords.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Bring the database at ``url`` to ``revision``; returns the versions before and after.

    Waits while another upgrade of the same database runs (see
    ``migrations/env.py``). Must not run inside an event loop.
    """
    config = alembic_config(url)
    command.upgrade(config, revision)
    before, after = config.attributes.get("outcome", ((), ()))
    return tuple(before), tuple(after)


def describe(before: tuple[str, ...], after: tuple[str, ...]) -> str:
    """What an upgrade did, in the words ``warrantysync db upgrade`` prints."""
    now = ", ".join(after) or "empty"
    if before == after:
        return f"already up to date ({now})"
    was = ", ".join(before) if before else "an empty database"
    return f"upgraded from {was} to {now}"


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
