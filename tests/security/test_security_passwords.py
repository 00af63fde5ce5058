"""The password policy, through the real command and the real server.

``warrantysync users create`` used to accept a 4-character password, one of
only spaces, and a 2,000-character one that no login could ever use (a login
reads at most 1,024). Now one policy (``check_password_policy`` in the accounts
service) decides every password a person sets: 8 to 1,024 characters, not
only whitespace — the most a password may be is the most a login reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from attack import assert_error, live_server
from factories import World
from live import LiveServer

Live = tuple[LiveServer, World, str]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("passwords"), migrated_template) as started:
        yield started


def _users_create(url: str, email: str, password: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "WARRANTYSYNC_DATABASE_URL": url,
        "WARRANTYSYNC_SECRET_KEY": "live-test-secret",
    }
    args = ["users", "create", "--email", email, "--name", "Pat", "--password", password]
    return subprocess.run(
        [sys.executable, "-m", "warrantysync", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _login(server: LiveServer, email: str, password: str) -> httpx.Response:
    return httpx.post(
        f"{server.url}/api/auth/login", json={"email": email, "password": password}, timeout=15
    )


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("demo", "at least 8 characters"),
        ("seven77", "at least 8 characters"),
        (" " * 8, "only whitespace"),
        ("\t \n" * 4, "only whitespace"),
        ("p" * 1025, "at most 1024 characters"),
        ("p" * 2000, "at most 1024 characters"),
    ],
    ids=["4", "7", "spaces", "whitespace", "1025", "2000"],
)
def test_users_create_refuses_what_the_policy_refuses(site: Live, password: str, says: str) -> None:
    server, _world, url = site
    email = f"refused{len(password)}{password[:1].isspace()}@example.com"
    done = _users_create(url, email, password)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert says in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert_error(_login(server, email, password), *_refused_login(password))


def _refused_login(password: str) -> tuple[int, str]:
    # Longer than a login reads: refused as a body, before any account lookup.
    return (422, "validation_error") if len(password) > 1024 else (401, "invalid_credentials")


@pytest.mark.parametrize("length", [8, 1024])
def test_every_password_the_policy_allows_can_log_in(site: Live, length: int) -> None:
    server, _world, url = site
    password = ("correct horse " * 80)[:length]
    email = f"allowed{length}@example.com"
    done = _users_create(url, email, password)
    assert done.returncode == 0, (done.stdout, done.stderr)
    response = _login(server, email, password)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["email"] == email
