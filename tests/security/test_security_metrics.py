"""``/metrics`` against a running server: open by default, for nginx's
``deny`` to guard (docs/deployment.md), or behind a bearer token.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from attack import assert_error, live_server, run_admin
from conftest import LIVE_ENV

TOKEN = "metrics-7f3a9c1e5b2d4f6a8c0e"


def test_metrics_are_open_without_a_token_setting(tmp_path: Path, migrated_template: Path) -> None:
    with live_server(tmp_path, migrated_template) as (server, *_):
        response = httpx.get(f"{server.url}/metrics")
        assert response.status_code == 200
        assert "warrantysync_streams_open" in response.text


def test_with_a_token_setting_metrics_want_that_token(
    tmp_path: Path, migrated_template: Path
) -> None:
    with live_server(tmp_path, migrated_template, metrics_token=TOKEN) as (server, _world, url):
        user_token = run_admin(
            url,
            "create_token",
            email="dave@example.com",
            name="script",
            secret_key=LIVE_ENV["WARRANTYSYNC_SECRET_KEY"],
        )
        with httpx.Client(base_url=server.url) as http:
            for headers in [
                {},
                {"Authorization": f"Bearer {TOKEN[:-1]}"},
                {"Authorization": f"Bearer {TOKEN}x"},
                {"Authorization": TOKEN},
                {"Authorization": f"Basic {TOKEN}"},
                {"Authorization": f"Bearer {user_token}"},  # a user's API token is not it
            ]:
                refused = http.get("/metrics", headers=headers)
                assert_error(refused, 401, "not_authenticated")
                assert refused.headers["www-authenticate"].startswith("Bearer")
                assert "warrantysync_" not in refused.text
            allowed = http.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert allowed.status_code == 200
            assert "warrantysync_streams_open" in allowed.text
            # The probes stay open for load balancers.
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 200
        server.stop()
        assert TOKEN not in server.log()
