"""Ids from the request are ASCII decimal only, against a running server.

``str.isdigit()`` accepts "²" and "①" and ``int()`` accepts "+5", " 5" and
"5_0" (and Pydantic's lax mode "5.0"): a resume id of "²" used to crash the
stream (200 with an empty body), and ``/api/cases/5.0`` used to be case 5.
The rule (docs/protocol.md, "Ids"): an id is 1 to 18 ASCII digits; a resume id
that is not one is unknown (``sync-required``), an id in a path or query
that is not one is 422 naming the parameter.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from attack import Caller, assert_error, live_server, sign_in
from factories import World
from live import LiveServer

Live = tuple[LiveServer, World, str]
UNICODE_DIGITS = ["²", "¹²", "①", "٣", "５", "𝟓"]
NOT_ASCII_DECIMAL = [*UNICODE_DIGITS, "+5", "-5", " 5", "5 ", "5.0", "5_0", "0x5", "1e1", ""]


@pytest.fixture(scope="module")
def ids(tmp_path_factory: pytest.TempPathFactory, migrated_template: Path) -> Iterator[Live]:
    with live_server(tmp_path_factory.mktemp("ids"), migrated_template) as started:
        yield started


@pytest.fixture(scope="module")
def dave(ids: Live) -> Iterator[Caller]:
    caller = sign_in(ids[0].url, "dave@example.com")
    yield caller
    caller.http.close()


def _first_frames(caller: Caller, path: str, headers: dict[str, str] | None = None) -> list[str]:
    """The event names of a stream up to its ``ready``."""
    names: list[str] = []
    with caller.http.stream("GET", path, headers=headers or {}) as stream:
        assert stream.status_code == 200, stream.read()
        for line in stream.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
                if names[-1] == "ready":
                    return names
    raise AssertionError(f"the stream ended before ready: {names}")


@pytest.mark.parametrize("resume", [*UNICODE_DIGITS, "+5", " 5", "5_0", "5.0"])
def test_a_resume_id_that_is_not_ascii_decimal_is_unknown(
    ids: Live, dave: Caller, resume: str
) -> None:
    _server, world, _url = ids
    base = f"/api/branches/{world.branches['downtown']}/events?client_id=ids"
    by_query = _first_frames(dave, f"{base}&last_event_id={quote(resume)}")
    assert by_query == ["sync-required", "ready"]
    if resume == resume.strip() and resume.isascii():  # a header value cannot carry the rest
        by_header = _first_frames(dave, base, {"Last-Event-ID": resume})
        assert by_header == ["sync-required", "ready"]
    # The header wins over the query even when only the header is junk.
    assert _first_frames(dave, f"{base}&last_event_id=0", {"Last-Event-ID": "x5"}) == [
        "sync-required",
        "ready",
    ]


def test_a_non_ascii_header_resume_id_does_not_crash_the_stream(ids: Live, dave: Caller) -> None:
    _server, world, _url = ids
    path = f"/api/branches/{world.branches['downtown']}/events?client_id=ids"
    # httpx would refuse to encode "²" in a header; raw UTF-8 bytes are what an attacker sends.
    for raw in ("²".encode(), "①".encode(), "¹²".encode()):
        names: list[str] = []
        with dave.http.stream("GET", path, headers=[(b"Last-Event-ID", raw)]) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    names.append(line.removeprefix("event: "))
                    if names[-1] == "ready":
                        break
        assert names == ["sync-required", "ready"]


def _id_paths(world: World, bad: str) -> list[tuple[str, str, str]]:
    """(method, path, parameter) for every route that takes an id."""
    b = quote(bad, safe="")
    return [
        ("GET", f"/api/branches/{b}/cases", "branch_id"),
        ("POST", f"/api/branches/{b}/cases", "branch_id"),
        ("GET", f"/api/branches/{b}/events", "branch_id"),
        ("GET", f"/api/cases/{b}", "case_id"),
        ("PATCH", f"/api/cases/{b}", "case_id"),
        ("DELETE", f"/api/cases/{b}", "case_id"),
        ("GET", f"/api/cases/{b}/history", "case_id"),
        ("PUT", f"/api/cases/{b}/locks/notes", "case_id"),
        ("DELETE", f"/api/cases/{b}/locks/notes", "case_id"),
        ("GET", f"/api/cases/{world.cases['laptop']}/history?before={b}", "before"),
        ("GET", f"/branch/{b}", "branch_id"),
    ]


@pytest.mark.parametrize("bad", [v for v in NOT_ASCII_DECIMAL if v])
def test_ids_in_paths_and_queries_are_ascii_digits_only(ids: Live, dave: Caller, bad: str) -> None:
    _server, world, _url = ids
    case = world.cases["laptop"]
    before = dave.http.get(f"/api/cases/{case}").json()
    # Make the bad spelling name a real case if it were read leniently.
    spelled = bad.replace("5", str(case)) if "5" in bad else bad
    for method, path, parameter in _id_paths(world, spelled):
        body = {"changes": {"notes": "by a bad id"}} if method == "PATCH" else None
        if method == "POST":
            body = {"customer_name": "By A Bad Id"}
        response = dave.http.request(method, path, json=body, headers=dave.headers())
        error = assert_error(response, 422, "validation_error")
        assert error["field"] == parameter, (method, path, error)
        assert parameter in error["message"], error
    assert dave.http.get(f"/api/cases/{case}").json() == before
    names = [
        c["customer_name"]
        for c in dave.http.get(f"/api/branches/{world.branches['downtown']}/cases").json()["cases"]
    ]
    assert "By A Bad Id" not in names


def test_plain_ascii_ids_still_work(ids: Live, dave: Caller) -> None:
    _server, world, _url = ids
    case = world.cases["laptop"]
    assert dave.http.get(f"/api/cases/{case}").status_code == 200
    assert dave.http.get(f"/api/cases/0{case}").json()["id"] == case  # leading zeros are digits
    assert dave.http.get(f"/api/cases/{case}/history?before=999").status_code == 200
    assert_error(dave.http.get("/api/cases/99999999"), 404, "not_found")
    assert_error(dave.http.get("/api/cases/" + "9" * 18), 404, "not_found")
    assert_error(dave.http.get("/api/cases/" + "9" * 19), 422, "validation_error")
    with httpx.Client(base_url=ids[0].url) as anonymous:  # 401 still comes first
        assert_error(anonymous.get("/api/cases/5.0"), 401, "not_authenticated")
