"""cli.py: the `warrantysync` command, run in-process through click's CliRunner."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from warrantysync.cli import main
from warrantysync.services.accounts import Accounts
from warrantysync.storage.db import Database

SECRET = "test-secret-key"


@pytest.fixture
def env(db_url: str) -> dict[str, str | None]:
    return {
        "WARRANTYSYNC_DATABASE_URL": db_url,
        "WARRANTYSYNC_SECRET_KEY": "test-secret-key",
        "WARRANTYSYNC_REDIS_URL": None,  # None: removed from the environment
    }


def invoke(env: dict[str, str | None], *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=input)


def ok(env: dict[str, str | None], *args: str, input: str | None = None) -> str:
    result = invoke(env, *args, input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def fails(env: dict[str, str | None], *args: str) -> str:
    """The command exits 1 with a one-line message, not a traceback."""
    result = invoke(env, *args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit)
    assert result.output.startswith("Error: ")
    assert "Traceback" not in result.output
    return result.output


def test_db_upgrade_creates_the_schema(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "WARRANTYSYNC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/fresh.db",
        "WARRANTYSYNC_SECRET_KEY": "k",
    }
    assert "upgraded from an empty database" in ok(env, "db", "upgrade")
    assert "already up to date" in ok(env, "db", "upgrade")  # twice is fine
    assert "id" in ok(env, "users", "list")


def test_commands_on_an_unmigrated_database_say_what_to_do(tmp_path: Path) -> None:
    env: dict[str, str | None] = {
        "WARRANTYSYNC_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/empty.db",
        "WARRANTYSYNC_SECRET_KEY": "k",
    }
    assert "warrantysync db upgrade" in fails(env, "users", "list")


def test_invalid_configuration_is_reported(env: dict[str, str | None]) -> None:
    output = fails({**env, "WARRANTYSYNC_LOCK_TTL": "-1"}, "users", "list")
    assert "WARRANTYSYNC_LOCK_TTL" in output


def test_demo_prints_logins_once(env: dict[str, str | None]) -> None:
    output = ok(env, "demo")
    assert re.search(r"alice@example\.com\s+demo\s+editor of Downtown, Airport", output)
    assert re.search(r"carol@example\.com\s+demo\s+viewer of Downtown", output)
    assert "email" in output and "password" in output and "role" in output

    again = ok(env, "demo")
    assert "already has data" in again
    assert "alice@example.com" not in again

    listed = ok(env, "users", "list")
    assert "Dave Kim" in listed and "Downtown (1): manager" in listed
    branches = ok(env, "branches", "list")
    assert "America/New_York" in branches and "Airport" in branches


def test_users_create_list_deactivate(env: dict[str, str | None]) -> None:
    created = ok(env, "users", "create", "--email", "Kim@Example.com", "--name", "Kim Lee",
                 "--password", "pw-secret")  # fmt: skip
    assert "kim@example.com" in created

    assert "already exists" in fails(
        env,
        "users",
        "create",
        "--email",
        "kim@example.com",
        "--name",
        "K",
        "--password",
        "pw-secret-x",
    )
    assert "not a valid email" in fails(
        env, "users", "create", "--email", "nope", "--name", "N", "--password", "pw-secret"
    )

    listed = ok(env, "users", "list")
    assert re.search(r"kim@example\.com\s+Kim Lee\s+yes", listed)

    ok(env, "users", "deactivate", "--email", "kim@example.com")
    assert re.search(r"kim@example\.com\s+Kim Lee\s+no", ok(env, "users", "list"))
    ok(env, "users", "activate", "--email", "kim@example.com")
    assert "no user with email ghost@example.com" in fails(
        env, "users", "deactivate", "--email", "ghost@example.com"
    )


def test_users_create_prompts_for_the_password_twice(
    env: dict[str, str | None], db_url: str
) -> None:
    output = ok(env, "users", "create", "--email", "pat@example.com", "--name", "Pat",
                input="typed-secret\ntyped-secret\n")  # fmt: skip
    assert "typed-secret" not in output  # hidden input is not echoed

    async def check() -> None:
        db = Database(db_url)
        try:
            user = await Accounts(db, session_ttl=60, secret_key=SECRET).check_password(
                email="pat@example.com", password="typed-secret"
            )
            assert user.name == "Pat"
        finally:
            await db.dispose()

    asyncio.run(check())


def test_users_set_password_prompts_twice_and_ends_sessions(
    env: dict[str, str | None], db_url: str
) -> None:
    ok(env, "users", "create", "--email", "pat@example.com", "--name", "Pat",
       "--password", "first-secret")  # fmt: skip
    accounts_of = lambda db: Accounts(db, session_ttl=60, secret_key=SECRET)  # noqa: E731

    async def sign_in(password: str) -> int:
        db = Database(db_url)
        try:
            accounts = accounts_of(db)
            user = await accounts.check_password(email="pat@example.com", password=password)
            opened = await accounts.open_session(user)
            return opened.principal.session_id or 0
        finally:
            await db.dispose()

    asyncio.run(sign_in("first-secret"))
    output = ok(env, "users", "set-password", "--email", "pat@example.com",
                input="second-secret\nsecond-secret\n")  # fmt: skip
    assert "second-secret" not in output
    assert "password set for pat@example.com; 1 session(s) ended" in output
    asyncio.run(sign_in("second-secret"))
    assert "at least 8 characters" in fails(
        env, "users", "set-password", "--email", "pat@example.com", "--password", "short"
    )
    assert "no user with email ghost@example.com" in fails(
        env, "users", "set-password", "--email", "ghost@example.com", "--password", "long enough"
    )
    # A mistyped confirmation is asked again, never saved.
    retyped = invoke(env, "users", "set-password", "--email", "pat@example.com",
                     input="third-secret\nthird-secreT\n")  # fmt: skip
    assert retyped.exit_code != 0 and "do not match" in retyped.output
    asyncio.run(sign_in("second-secret"))


def test_branches_and_members(env: dict[str, str | None]) -> None:
    assert "created branch 1 Harbour (Europe/Berlin)" in ok(
        env, "branches", "create", "--name", "Harbour", "--timezone", "Europe/Berlin"
    )
    assert "not an IANA time zone" in fails(
        env, "branches", "create", "--name", "X", "--timezone", "Moon/Base"
    )
    ok(
        env,
        "users",
        "create",
        "--email",
        "lu@example.com",
        "--name",
        "Lu",
        "--password",
        "pw-lu-secret",
    )

    ok(env, "members", "add", "--email", "lu@example.com", "--branch", "1", "--role", "viewer")
    assert "Harbour (1): viewer" in ok(env, "users", "list")
    assert "already a member" in fails(
        env, "members", "add", "--email", "lu@example.com", "--branch", "1", "--role", "editor"
    )
    ok(env, "members", "role", "--email", "lu@example.com", "--branch", "1", "--role", "manager")
    assert "Harbour (1): manager" in ok(env, "users", "list")
    ok(env, "members", "remove", "--email", "lu@example.com", "--branch", "1")
    assert "Harbour" not in ok(env, "users", "list")

    assert "no branch with id 7" in fails(
        env, "members", "add", "--email", "lu@example.com", "--branch", "7", "--role", "viewer"
    )
    bad_role = invoke(
        env, "members", "add", "--email", "lu@example.com", "--branch", "1", "--role", "owner"
    )
    assert bad_role.exit_code == 2 and "owner" in bad_role.output  # click's usage error


def test_tokens_create_list_revoke(env: dict[str, str | None], db_url: str) -> None:
    ok(
        env,
        "users",
        "create",
        "--email",
        "bot@example.com",
        "--name",
        "Bot",
        "--password",
        "pw-bot-secret",
    )
    result = CliRunner().invoke(
        main, ["tokens", "create", "--email", "bot@example.com", "--name", "nightly"], env=env
    )
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{40,}", token)
    assert "cannot be shown again" in result.stderr

    async def bearer() -> int | None:
        db = Database(db_url)
        try:
            principal = await Accounts(db, session_ttl=60, secret_key=SECRET).from_bearer(token)
            return None if principal is None else principal.token_id
        finally:
            await db.dispose()

    token_id = asyncio.run(bearer())
    assert token_id is not None
    listed = ok(env, "tokens", "list")
    assert re.search(rf"^{token_id}\s+bot@example\.com\s+nightly", listed, re.M)
    assert token not in listed

    assert f"revoked token {token_id}" in ok(env, "tokens", "revoke", "--id", str(token_id))
    assert asyncio.run(bearer()) is None
    assert "no API token with id 999" in fails(env, "tokens", "revoke", "--id", "999")


def test_serve_refuses_several_workers_without_redis(env: dict[str, str | None]) -> None:
    output = fails(env, "serve", "--workers", "2")
    assert "WARRANTYSYNC_REDIS_URL" in output


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "warrantysync", "--help"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for command in ("serve", "db", "demo", "users", "members", "tokens", "branches"):
        assert command in result.stdout


def test_cases_import_checks_everything_then_writes(
    env: dict[str, str | None], db_url: str, tmp_path: Path
) -> None:
    ok(env, "branches", "create", "--name", "Imported")
    good = tmp_path / "good.csv"
    good.write_text(
        "customer_name,product,status,notes\n"
        + "".join(f'Customer {n},Kettle,closed,"two\nlines {n}"\n' for n in range(1200))
    )
    assert "1,200 rows are valid; nothing written (--dry-run)" in ok(
        env, "cases", "import", "--branch", "1", "--dry-run", str(good)
    )
    assert _count_cases(db_url) == 0
    out = ok(env, "cases", "import", "--branch", "1", str(good))
    assert re.search(r"imported 1,200 cases into branch 1 \(WC-\d{6} to WC-\d{6}\)", out), out
    assert _count_cases(db_url) == 1200

    bad = tmp_path / "bad.csv"
    bad.write_text("customer_name,customer_email\nFine,fine@example.com\n,x@example.com\nB,nope\n")
    result = invoke(env, "cases", "import", "--branch", "1", str(bad))
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == "line 3: customer_name: must not be empty (required)"
    assert lines[1].startswith("line 4: customer_email: is not a valid email address")
    assert lines[2] == f"Error: nothing imported: 2 lines have errors ({bad})"
    assert "Traceback" not in result.output
    assert _count_cases(db_url) == 1200
    assert "no branch 7" in fails(env, "cases", "import", "--branch", "7", str(good))


def _count_cases(db_url: str) -> int:
    from sqlalchemy import func, select

    from warrantysync.storage.models import WarrantyCase

    async def count() -> int:
        db = Database(db_url)
        try:
            async with db.read() as session:
                return int(
                    await session.scalar(select(func.count()).select_from(WarrantyCase)) or 0
                )
        finally:
            await db.dispose()

    return asyncio.run(count())
