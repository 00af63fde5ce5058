"""Fuzzing a running server.

* schemathesis explores every operation of the app's own OpenAPI document
  (``/api/openapi.json``) as an authenticated manager: no 5xx, and every
  status, content type and body must match the document (which declares the
  ``{error, message}`` body for errors and the case schema for cases).
* hypothesis throws PATCH bodies — structured, nearly valid and plain
  garbage — at one case as an editor: never a 5xx, every refusal is
  ``{error, message}``, and a refused body changes nothing.

``WARRANTYSYNC_FUZZ_SCALE=long`` (``make fuzz``) runs many more examples.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from attack import live_server, run_admin
from conftest import LIVE_ENV
from factories import World
from live import LiveServer
from warrantysync import Settings, create_app

LONG = os.environ.get("WARRANTYSYNC_FUZZ_SCALE") == "long"
SCHEMA_EXAMPLES = 150 if LONG else 12
PATCH_EXAMPLES = 2000 if LONG else 120
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class Target:
    def __init__(self, server: LiveServer, world: World, url: str) -> None:
        self.server = server
        self.world = world
        key = LIVE_ENV["WARRANTYSYNC_SECRET_KEY"]
        self.manager = run_admin(
            url, "create_token", email="dave@example.com", name="fuzz", secret_key=key
        )
        self.editor = run_admin(
            url, "create_token", email="alice@example.com", name="fuzz", secret_key=key
        )


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Target]:
    with live_server(tmp_path_factory.mktemp("fuzz"), migrated_template) as (server, world, url):
        yield Target(server, world, url)


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    return schemathesis.openapi.from_url(f"{target.server.url}/api/openapi.json")


def _operations() -> list[tuple[str, str]]:
    """(METHOD, path) of every documented operation, read from the app itself."""
    app = create_app(Settings(database_url="sqlite+aiosqlite:///:memory:", secret_key="x"))
    return [
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        # The event stream never ends, so it is no request/response to fuzz; its
        # parameters are covered by test_streams.py and the matrix.
        if not path.endswith("/events")
        for method in operations
    ]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_every_operation_matches_its_schema(
    api_schema: Any, target: Target, method: str, path: str
) -> None:
    operation = api_schema[path][method]
    cases = operation.as_strategy(GenerationMode.POSITIVE)
    with contextlib.suppress(Exception):  # not every operation has anything to negate
        cases = cases | operation.as_strategy(GenerationMode.NEGATIVE)

    @given(case=cases)
    @settings(
        max_examples=SCHEMA_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=not LONG,
        database=None,
    )
    def explore(case: Any) -> None:
        case.call_and_validate(
            base_url=target.server.url,
            headers={"Authorization": f"Bearer {target.manager}"},
            checks=CHECKS,
            timeout=15,
        )

    explore()


# --- PATCH bodies ---------------------------------------------------------------

FIELDS = [
    "customer_name",
    "customer_phone",
    "customer_email",
    "product",
    "serial_number",
    "purchase_date",
    "issue",
    "status",
    "priority",
    "assignee_id",
    "notes",
]
READ_ONLY = ["id", "branch_id", "case_number", "version", "created_at", "updated_at", "updated_by"]
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=60)
    | st.sampled_from(
        ["", " ", "2024-02-29", "2999-01-01", "new", "urgent", "a@b.example", "\u0000", "x" * 6000]
    )
)
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELD_NAMES = st.sampled_from(FIELDS + READ_ONLY) | st.text(max_size=12)
STRUCTURED = st.fixed_dictionaries(
    {"changes": st.dictionaries(FIELD_NAMES, JSON, max_size=4)},
    optional={
        "expected": st.dictionaries(FIELD_NAMES, JSON, max_size=3) | JSON,
        "lock_tokens": st.dictionaries(FIELD_NAMES, JSON, max_size=2) | JSON,
        "extra": JSON,
    },
)
BODIES = (
    STRUCTURED.map(lambda body: ("json", body))
    | JSON.map(lambda body: ("json", body))
    | st.binary(max_size=80).map(lambda raw: ("raw", raw))
)
HEADER_TEXT = st.characters(min_codepoint=0x21, max_codepoint=0x7E)  # what HTTP can carry
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "X-Client-Id": st.text(HEADER_TEXT, max_size=70),
        "Idempotency-Key": st.text(HEADER_TEXT, max_size=140),
    },
)


@pytest.fixture(scope="module")
def editor(target: Target) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=target.server.url,
        headers={"Authorization": f"Bearer {target.editor}"},
        timeout=15,
    ) as http:
        yield http


@given(body=BODIES, headers=HEADERS)
@settings(
    max_examples=PATCH_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=not LONG,
    database=None,
)
def test_patch_bodies_never_crash_and_refusals_change_nothing(
    editor: httpx.Client, target: Target, body: tuple[str, Any], headers: dict[str, str]
) -> None:
    path = f"/api/cases/{target.world.cases['laptop']}"
    before = editor.get(path).json()
    kind, value = body
    raw = httpx.Request("PATCH", "http://x", json=value).content if kind == "json" else value
    response = editor.patch(
        path, content=raw, headers={"Content-Type": "application/json", **headers}
    )
    assert response.status_code < 500, response.text
    after = editor.get(path).json()
    if response.is_success:
        assert response.status_code == 200
        assert response.json() == after
        assert after["version"] in (before["version"], before["version"] + 1)
        return
    error = response.json()
    assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str), error
    assert after == before, (response.status_code, error)
