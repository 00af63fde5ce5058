"""The ``warrantysync`` command line (docs/architecture.md, "Settings and the command line").

Each command reads ``Settings()`` from the environment when it runs (never at
import), opens the database for its own work and closes it again. Domain and
configuration errors become a one-line message and exit status 1, never a
traceback.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, BinaryIO, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from .config import Settings
from .errors import WarrantySyncError
from .storage.db import Database

T = TypeVar("T")
ROLES = click.Choice(["viewer", "editor", "manager"])


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"WARRANTYSYNC_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise click.ClickException(f"invalid configuration: {problems}") from None


def _with_db(work: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``work`` against the configured database and close the engine afterwards."""
    settings = _settings()

    async def main() -> T:
        db = Database(
            settings.database_url,
            timeout=settings.database_timeout,
            group_commit=settings.group_commit,
        )
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(main())
    except WarrantySyncError as exc:
        raise click.ClickException(exc.message) from None
    except SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        raise click.ClickException(
            f"database error: {detail} (is the schema current? run `warrantysync db upgrade`)"
        ) from None


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    text_rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) for cell, w in zip(cells, widths, strict=True)).rstrip()

    click.echo(line(headers))
    click.echo(line(["-" * w for w in widths]))
    for row in text_rows:
        click.echo(line(row))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="warrantysync")
def main() -> None:
    """warrantysync: real-time collaborative editing of warranty cases.

    Configured by WARRANTYSYNC_* environment variables (see the README).
    """


# -- serve ---------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes; more than one needs WARRANTYSYNC_REDIS_URL.",
)
@click.option("--reload", is_flag=True, help="Restart when the code changes (development).")
def serve(host: str, port: int, workers: int, reload: bool) -> None:
    """Serve the web app and API over HTTP."""
    from .server import run

    run(_settings(), host=host, port=port, workers=workers, reload=reload)


# -- db ------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the current version."""
    from .storage.failures import classify
    from .storage.migrate import describe, upgrade

    settings = _settings()
    try:
        before, after = upgrade(settings.database_url)
    except Exception as exc:
        failure = classify(exc)
        if failure is not None:
            raise click.ClickException(failure.value) from None
        if isinstance(exc, SQLAlchemyError):
            detail = getattr(exc, "orig", None) or exc
            raise click.ClickException(f"database error: {detail}") from None
        raise
    click.echo(describe(before, after))


# -- demo ----------------------------------------------------------------------


@main.command()
def demo() -> None:
    """Create demo branches, users and cases in an empty database."""
    from .demo import load_demo

    logins = _with_db(load_demo)
    if logins is None:
        click.echo("the database already has data; demo data not loaded")
        return
    click.echo("demo data loaded; sign in with:")
    _table(["email", "password", "role"], logins)


# -- users ---------------------------------------------------------------------


@main.group()
def users() -> None:
    """User accounts."""


@users.command("create")
@click.option("--email", required=True)
@click.option("--name", required=True)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Asked for (hidden, twice) when not given.",
)
def users_create(email: str, name: str, password: str) -> None:
    """Create a user (add them to branches with `members add`)."""
    from .services.admin import create_user

    user = _with_db(lambda d: create_user(d, email=email, name=name, password=password))
    click.echo(f"created user {user.id} {user.email}")


@users.command("set-password")
@click.option("--email", required=True)
@click.option(
    "--password",
    prompt="New password",
    hide_input=True,
    confirmation_prompt=True,
    help="Asked for (hidden, twice) when not given.",
)
def users_set_password(email: str, password: str) -> None:
    """Give a user a new password; their sessions end at once (API tokens stay)."""
    from .services.admin import set_password

    user, ended = _with_db(lambda d: set_password(d, email=email, password=password))
    click.echo(f"password set for {user.email}; {ended} session(s) ended")


@users.command("deactivate")
@click.option("--email", required=True)
def users_deactivate(email: str) -> None:
    """Block a user's login and revoke their sessions and API tokens at once."""
    from .services.admin import deactivate_user

    user = _with_db(lambda d: deactivate_user(d, email=email))
    click.echo(f"deactivated {user.email}; their sessions and API tokens are revoked")


@users.command("activate")
@click.option("--email", required=True)
def users_activate(email: str) -> None:
    """Let a deactivated user log in again."""
    from .services.admin import activate_user

    user = _with_db(lambda d: activate_user(d, email=email))
    click.echo(f"activated {user.email}")


@users.command("list")
def users_list() -> None:
    """List users and their branches."""
    from .services.admin import list_users

    summaries = _with_db(list_users)
    _table(
        ["id", "email", "name", "active", "branches"],
        (
            (
                u.id,
                u.email,
                u.name,
                "yes" if u.is_active else "no",
                ", ".join(f"{name} ({bid}): {role.value}" for bid, name, role in u.memberships),
            )
            for u in summaries
        ),
    )


# -- branches ------------------------------------------------------------------


@main.group()
def branches() -> None:
    """Store branches."""


@branches.command("create")
@click.option("--name", required=True)
@click.option("--timezone", default="UTC", show_default=True, help="IANA zone, e.g. Europe/Berlin.")
def branches_create(name: str, timezone: str) -> None:
    """Create a branch."""
    from .services.admin import create_branch

    branch = _with_db(lambda d: create_branch(d, name=name, timezone=timezone))
    click.echo(f"created branch {branch.id} {branch.name} ({branch.timezone})")


@branches.command("list")
def branches_list() -> None:
    """List branches."""
    from .services.admin import list_branches

    rows = _with_db(list_branches)
    _table(["id", "name", "timezone"], ((b.id, b.name, b.timezone) for b in rows))


# -- members -------------------------------------------------------------------


def _member_options(with_role: bool) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        if with_role:
            fn = click.option("--role", required=True, type=ROLES)(fn)
        fn = click.option("--branch", "branch_id", required=True, type=int, help="Branch id.")(fn)
        fn = click.option("--email", required=True)(fn)
        return fn

    return decorate


@main.group()
def members() -> None:
    """Who may see and edit which branch."""


@members.command("add")
@_member_options(with_role=True)
def members_add(email: str, branch_id: int, role: str) -> None:
    """Give a user a role on a branch."""
    from .services.admin import add_member

    _with_db(lambda d: add_member(d, email=email, branch_id=branch_id, role=role))
    click.echo(f"{email.strip().lower()} is now {role} of branch {branch_id}")


@members.command("remove")
@_member_options(with_role=False)
def members_remove(email: str, branch_id: int) -> None:
    """Take a user off a branch."""
    from .services.admin import remove_member

    _with_db(lambda d: remove_member(d, email=email, branch_id=branch_id))
    click.echo(f"{email.strip().lower()} removed from branch {branch_id}")


@members.command("role")
@_member_options(with_role=True)
def members_role(email: str, branch_id: int, role: str) -> None:
    """Change a member's role on a branch."""
    from .services.admin import set_role

    _with_db(lambda d: set_role(d, email=email, branch_id=branch_id, role=role))
    click.echo(f"{email.strip().lower()} is now {role} of branch {branch_id}")


# -- cases ---------------------------------------------------------------------


@main.group()
def cases() -> None:
    """Warranty cases in bulk."""


@cases.command("import")
@click.option("--branch", "branch_id", required=True, type=int, help="Branch id.")
@click.option("--dry-run", is_flag=True, help="Check every row; write nothing.")
@click.argument("file", type=click.File("rb"))
def cases_import(branch_id: int, dry_run: bool, file: BinaryIO) -> None:
    """Create the cases of a CSV file, all or nothing (docs/operations.md, "Importing cases").

    The columns are those of the export (GET …/cases.csv); every row is checked
    by the API's rules first, and one bad row imports nothing.
    """
    from .services.imports import ImportRefused

    data = file.read()
    settings = _settings()

    def progress(done: int, total: int) -> None:
        click.echo(f"imported {done:,} of {total:,}", err=True)

    async def work(db: Database) -> Any:
        from .services.imports import CaseImport, no_one

        publish, close = no_one, None
        if settings.redis_url is not None:
            publish, close = _redis_publisher(settings.redis_url)
        try:
            await _branch_exists(db, branch_id)
            importer = CaseImport(db, publish=publish, replay_window=settings.replay_window)
            return await importer.run(
                branch_id=branch_id, data=data, actor=None, dry_run=dry_run, progress=progress
            )
        except ImportRefused as refused:  # the report, not a one-line error
            return refused
        finally:
            if close is not None:
                await close()

    report = _with_db(work)
    if isinstance(report, ImportRefused):
        refused = report
        for error in refused.errors:
            click.echo(f"line {error.line}: {error.message} ({error.rule})")
        lines = len({error.line for error in refused.errors})
        have = "1 line has" if lines == 1 else f"{lines:,} lines have"
        raise click.ClickException(f"nothing imported: {have} errors ({file.name})")
    if report.dry_run:
        click.echo(f"{report.rows:,} rows are valid; nothing written (--dry-run)")
    elif report.imported:
        first, last = report.case_numbers
        click.echo(
            f"imported {report.imported:,} cases into branch {branch_id} ({first} to {last})"
            f" in {report.seconds:.1f} s"
        )
    else:
        click.echo("the file has no rows; nothing imported")


async def _branch_exists(db: Database, branch_id: int) -> None:
    from sqlalchemy import select

    from .errors import NotFound
    from .storage.models import Branch

    async with db.read() as session:
        if await session.scalar(select(Branch.id).where(Branch.id == branch_id)) is None:
            raise NotFound(f"no branch {branch_id} (see `warrantysync branches list`)")


def _redis_publisher(url: str) -> tuple[Any, Any]:
    """Publish each batch's events to the servers over Redis, in one round trip.

    Best effort, like the servers' own publishing: the outbox is the truth, and
    a server that missed them reads them from there.
    """
    from .services.broker.redis import CHANNEL, encode_message
    from .services.redisconn import DOWN_ERRORS, connect

    client = connect(url)
    warned: list[bool] = []

    async def publish(events: list[Any]) -> None:
        try:
            async with client.pipeline(transaction=False) as pipe:
                for event in events:
                    pipe.publish(CHANNEL, encode_message(event))
                await pipe.execute()
        except DOWN_ERRORS as exc:
            if not warned:
                warned.append(True)
                click.echo(
                    f"warning: Redis did not take the events ({exc});"
                    " the servers catch up from the database",
                    err=True,
                )

    return publish, client.aclose


# -- tokens --------------------------------------------------------------------


@main.group()
def tokens() -> None:
    """API tokens for scripts (Authorization: Bearer …)."""


@tokens.command("create")
@click.option("--email", required=True, help="The user the token acts as.")
@click.option("--name", required=True, help="What the token is for, e.g. 'nightly export'.")
def tokens_create(email: str, name: str) -> None:
    """Issue a token. It is shown only this once."""
    from .services.admin import create_token

    secret_key = _settings().secret_key
    token = _with_db(lambda d: create_token(d, email=email, name=name, secret_key=secret_key))
    click.echo(token)
    click.echo("store it now: it cannot be shown again (see `tokens list` for its id)", err=True)


@tokens.command("list")
@click.option("--email", default=None, help="Only this user's tokens.")
def tokens_list(email: str | None) -> None:
    """List tokens (never their values)."""
    from .services.admin import list_tokens

    rows = _with_db(lambda d: list_tokens(d, email=email))
    _table(
        ["id", "user", "name", "created", "revoked"],
        (
            (
                t.id,
                t.email,
                t.name,
                t.created_at.isoformat(timespec="seconds"),
                t.revoked_at.isoformat(timespec="seconds") if t.revoked_at else "",
            )
            for t in rows
        ),
    )


@tokens.command("revoke")
@click.option("--id", "token_id", required=True, type=int)
def tokens_revoke(token_id: int) -> None:
    """Revoke a token at once."""
    from .services.admin import revoke_token

    _with_db(lambda d: revoke_token(d, token_id=token_id))
    click.echo(f"revoked token {token_id}")


__all__ = ["main"]
