"""Listing cases a page at a time through the ASGI app (docs/protocol.md, "Listing cases").

Paging by cursor while other people insert and delete cases, every filter and
every sort against an order computed here from the cases themselves, the
range re-read with ``until``, bad parameters, and the 304 that reads no case.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from conftest import login
from factories import World, add_member, make_case, make_user
from warrantysync.casefields import FIELD, SORTABLE, Priority, Status
from warrantysync.container import Services
from warrantysync.services.cases import Actor
from warrantysync.storage.models import Role

SORTS = [s for name in SORTABLE for s in (name, f"-{name}")]
NAMES = ["Ada Lovelace", "ada lovelace", "Bob Stone", "Zed Adams", "Émile Zola", "Yu Na"]
PRODUCTS = ["iPhone 14", "XPS 13", "Kettle 100%", "Pixel_7", "Bosch SMS6"]


@pytest.fixture
async def branch(services: Services, world: World) -> dict[str, Any]:
    """Downtown with 40 more cases of every status, priority, assignee and date."""
    rng = random.Random(7)
    users = world.users
    # A member whose name sorts first, and one who leaves the branch later.
    world.users["aaron"] = await make_user(services.db, email="aaron@example.com", name="Aaron A")
    await add_member(
        services.db,
        user_id=world.users["aaron"],
        branch_id=world.branches["downtown"],
        role=Role.editor,
    )
    assignees = [None, users["alice"], users["bob"], users["dave"], users["aaron"]]
    for n in range(40):
        await make_case(
            services.db,
            branch_id=world.branches["downtown"],
            by=users["dave"],
            customer_name=f"{rng.choice(NAMES)} {n:02d}",
            customer_phone=f"+1 555 01{n:02d}",
            customer_email=f"c{n}@example.com" if n % 3 else "",
            product=rng.choice(PRODUCTS),
            serial_number=f"SN{rng.randrange(1000):04d}",
            purchase_date=None if n % 4 == 0 else f"2024-0{1 + n % 9}-1{n % 10}",
            status=rng.choice(list(Status)).value,
            priority=rng.choice(list(Priority)).value,
            assignee_id=rng.choice(assignees),
        )
    return {"id": world.branches["downtown"], "world": world}


@pytest.fixture
async def http(
    app_services: tuple[Any, Services], world: World
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_services[0])
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        client.headers.update(await login(client, "alice@example.com"))
        yield client


async def all_cases(http: httpx.AsyncClient, branch_id: int) -> list[dict[str, Any]]:
    answer = await http.get(f"/api/branches/{branch_id}/cases")
    assert answer.status_code == 200, answer.text
    cases: list[dict[str, Any]] = answer.json()["cases"]
    return cases


def expected_order(cases: list[dict[str, Any]], sort: str, names: dict[int, str]) -> list[int]:
    """The server's order, computed from the cases (docs/protocol.md, "Listing cases")."""
    field, desc = sort.removeprefix("-"), sort.startswith("-")
    spec = FIELD[field]

    def key(case: dict[str, Any]) -> tuple[Any, ...]:
        value = case[field]
        if field == "case_number":
            return (case["id"],)
        if spec.choices is not None:
            return ([c.value for c in spec.choices].index(value), case["id"])
        if field == "assignee_id":
            if value is None:
                return (2, "", case["id"])
            if value in names:
                return (0, (names[value].casefold(), value), case["id"])
            return (1, value, case["id"])
        return (value, case["id"])

    empty = [c for c in cases if spec.nullable and c[field] is None]
    full = [c for c in cases if not (spec.nullable and c[field] is None)]
    if field == "assignee_id":
        full = sorted(full, key=key, reverse=desc)
        # Former members come after the members either way, empty last.
        members = [c for c in full if c[field] in names]
        others = sorted((c for c in full if c[field] not in names), key=key, reverse=desc)
        full = members + others
    else:
        full = sorted(full, key=key, reverse=desc)
    return [c["id"] for c in full] + [
        c["id"] for c in sorted(empty, key=lambda c: c["id"], reverse=desc)
    ]


async def walk(
    http: httpx.AsyncClient, branch_id: int, params: dict[str, Any], between: Any = None
) -> list[dict[str, Any]]:
    """Every page of a list, following next_cursor; ``between(n)`` runs after page n."""
    seen: list[dict[str, Any]] = []
    cursor = None
    for n in range(200):
        answer = await http.get(
            f"/api/branches/{branch_id}/cases",
            params={**params, **({"cursor": cursor} if cursor else {})},
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert len(body["cases"]) == len(body["cursors"]) <= int(params.get("limit", 100))
        seen.extend(body["cases"])
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
        assert cursor == body["cursors"][-1]
        if between is not None:
            await between(n)
    raise AssertionError("the walk never ended")


async def member_names(services: Services, branch_id: int) -> dict[int, str]:
    return {m["id"]: str(m["name"]) for m in await services.accounts.members(branch_id=branch_id)}


# -- paging ---------------------------------------------------------------------------


async def test_pages_follow_every_sort_and_hold_every_case_once(
    http: httpx.AsyncClient, services: Services, branch: dict[str, Any]
) -> None:
    everything = await all_cases(http, branch["id"])
    names = await member_names(services, branch["id"])
    by_id = {c["id"]: c for c in everything}
    for sort in SORTS:
        pages = await walk(http, branch["id"], {"sort": sort, "limit": 7})
        assert [c["id"] for c in pages] == expected_order(everything, sort, names), sort
        # The same JSON as the whole-branch answer.
        assert all(by_id[c["id"]] == c for c in pages), sort


@pytest.mark.parametrize("sort", ["-case_number", "customer_name", "-status", "assignee_id"])
async def test_paging_is_stable_while_cases_are_inserted_and_deleted(
    http: httpx.AsyncClient, services: Services, branch: dict[str, Any], sort: str
) -> None:
    world: World = branch["world"]
    before = {c["id"] for c in await all_cases(http, branch["id"])}
    deleted: set[int] = set()
    inserted: set[int] = set()
    rng = random.Random(sort)
    manager = Actor(world.users["dave"], "Dave Kim")

    async def churn(n: int) -> None:
        # Someone adds two cases and a manager deletes two, between every two pages.
        for _ in range(2):
            inserted.add(
                await make_case(
                    services.db,
                    branch_id=branch["id"],
                    by=world.users["bob"],
                    customer_name=f"{rng.choice(NAMES)} new {n}",
                    status=rng.choice(list(Status)).value,
                    assignee_id=rng.choice([None, world.users["bob"]]),
                )
            )
        for case_id in rng.sample(sorted(before - deleted), 2):
            await services.cases.delete(case_id=case_id, actor=manager)
            deleted.add(case_id)

    pages = await walk(http, branch["id"], {"sort": sort, "limit": 6}, between=churn)
    ids = [c["id"] for c in pages]
    assert len(ids) == len(set(ids)), "a case came twice"
    # Every case that lived through the whole walk came, exactly once.
    assert before - deleted <= set(ids)
    assert set(ids) <= before | inserted
    # And in the order the list has now (cases deleted meanwhile left out).
    names = await member_names(services, branch["id"])
    now = expected_order(await all_cases(http, branch["id"]), sort, names)
    assert [i for i in now if i in set(ids)] == [i for i in ids if i in set(now)]


async def test_until_rereads_a_range_exactly(
    http: httpx.AsyncClient, services: Services, branch: dict[str, Any]
) -> None:
    url = f"/api/branches/{branch['id']}/cases"
    first = (await http.get(url, params={"sort": "customer_name", "limit": 10})).json()
    second = (
        await http.get(
            url, params={"sort": "customer_name", "limit": 10, "cursor": first["next_cursor"]}
        )
    ).json()
    # The window of rows 11..20, read again: from the cursor before it, up to its last row.
    again = (
        await http.get(
            url,
            params={
                "sort": "customer_name",
                "cursor": first["cursors"][-1],
                "until": second["cursors"][-1],
            },
        )
    ).json()
    assert [c["id"] for c in again["cases"]] == [c["id"] for c in second["cases"]]
    assert again["next_cursor"] is None  # the range is complete
    # A case inserted inside that range shows in the re-read, however long it gets.
    inside = second["cases"][3]["customer_name"] + " b"
    world: World = branch["world"]
    new = await make_case(
        services.db, branch_id=branch["id"], by=world.users["bob"], customer_name=inside
    )
    grown = (
        await http.get(
            url,
            params={
                "sort": "customer_name",
                "cursor": first["cursors"][-1],
                "until": second["cursors"][-1],
            },
        )
    ).json()
    assert len(grown["cases"]) == 11 and new in [c["id"] for c in grown["cases"]]


async def test_the_paged_answer_and_the_total(
    http: httpx.AsyncClient, branch: dict[str, Any]
) -> None:
    answer = await http.get(f"/api/branches/{branch['id']}/cases", params={"limit": 5})
    body = answer.json()
    assert set(body) == {
        "cases",
        "cursors",
        "next_cursor",
        "total",
        "locks",
        "presence",
        "row_presence",
        "live_state",
        "last_event_id",
    }
    assert body["total"] == 42 and len(body["cases"]) == 5
    # Newest first by default.
    assert [c["id"] for c in body["cases"]] == sorted(
        (c["id"] for c in body["cases"]), reverse=True
    )
    assert isinstance(body["last_event_id"], str)


# -- filters ----------------------------------------------------------------------------


def _matches(case: dict[str, Any], q: str) -> bool:
    fields = ["case_number", "customer_name", "customer_phone", "customer_email", "product"]
    return any(q.casefold() in str(case[f]).casefold() for f in [*fields, "serial_number"])


FILTERS: list[tuple[dict[str, Any], Any]] = [
    ({"status": "new"}, lambda c, u: c["status"] == "new"),
    (
        {"status": ["closed", "rejected"]},
        lambda c, u: c["status"] in ("closed", "rejected"),
    ),
    (
        {"status": ["new", "diagnosing", "awaiting_parts", "in_repair", "ready"]},
        lambda c, u: c["status"] not in ("closed", "rejected"),
    ),
    ({"assignee": "me"}, lambda c, u: c["assignee_id"] == u["alice"]),
    ({"assignee": "none"}, lambda c, u: c["assignee_id"] is None),
    ({"assignee": "{bob}"}, lambda c, u: c["assignee_id"] == u["bob"]),
    ({"q": "ada"}, lambda c, u: _matches(c, "ada")),
    ({"q": "  LOVELACE "}, lambda c, u: _matches(c, "lovelace")),
    # Letters beyond ASCII match in their own case (SQLite folds ASCII only).
    ({"q": "Émile"}, lambda c, u: _matches(c, "Émile")),
    ({"q": "100%"}, lambda c, u: _matches(c, "100%")),  # % is a character, not a wildcard
    ({"q": "l_7"}, lambda c, u: _matches(c, "l_7")),  # and so is _
    ({"q": "+1 555 0107"}, lambda c, u: _matches(c, "+1 555 0107")),
    ({"q": "c5@example"}, lambda c, u: _matches(c, "c5@example")),
    ({"q": "SN0"}, lambda c, u: _matches(c, "SN0")),
    ({"q": "WC-0000"}, lambda c, u: _matches(c, "WC-0000")),
    ({"q": "no such thing"}, lambda c, u: False),
    (
        {"q": "a", "status": ["new", "ready"], "assignee": "none"},
        lambda c, u: (
            _matches(c, "a") and c["status"] in ("new", "ready") and c["assignee_id"] is None
        ),
    ),
]


async def test_every_filter_over_all_cases(
    http: httpx.AsyncClient, services: Services, branch: dict[str, Any]
) -> None:
    users = branch["world"].users
    everything = await all_cases(http, branch["id"])
    names = await member_names(services, branch["id"])
    sorts = ["-case_number", "status", "-assignee_id", "customer_name"]
    for n, (given, keep) in enumerate(FILTERS):
        params = {k: (v.format(**users) if isinstance(v, str) else v) for k, v in given.items()}
        wanted = [c for c in everything if keep(c, users)]
        sort = sorts[n % len(sorts)]
        pages = await walk(http, branch["id"], {**params, "sort": sort, "limit": 4})
        assert [c["id"] for c in pages] == expected_order(wanted, sort, names), (params, sort)
        url = f"/api/branches/{branch['id']}/cases"
        first = await http.get(url, params={**params, "limit": 1})
        assert first.json()["total"] == len(wanted), params


async def test_a_former_members_cases_sort_after_the_members(
    http: httpx.AsyncClient, services: Services, branch: dict[str, Any]
) -> None:
    from warrantysync.services.admin import remove_member

    await remove_member(services.db, email="aaron@example.com", branch_id=branch["id"])
    everything = await all_cases(http, branch["id"])
    names = await member_names(services, branch["id"])
    assert branch["world"].users["aaron"] not in names
    for sort in ("assignee_id", "-assignee_id"):
        pages = await walk(http, branch["id"], {"sort": sort, "limit": 9})
        assert [c["id"] for c in pages] == expected_order(everything, sort, names)


# -- bad parameters ---------------------------------------------------------------------


BAD: list[tuple[dict[str, Any], str, str]] = [
    ({"limit": "0"}, "limit", "range"),
    ({"limit": "501"}, "limit", "range"),
    ({"limit": "ten"}, "limit", "range"),
    ({"limit": "+5"}, "limit", "range"),
    ({"limit": ["5", "6"]}, "limit", "repeated"),
    ({"sort": "notes"}, "sort", "choice"),
    ({"sort": "--status"}, "sort", "choice"),
    ({"sort": ""}, "sort", "choice"),
    ({"status": "open"}, "status", "choice"),
    ({"status": ["new", "Closed"]}, "status", "choice"),
    ({"status": ""}, "status", "choice"),
    ({"assignee": "someone"}, "assignee", "assignee"),
    ({"assignee": "-1"}, "assignee", "assignee"),
    ({"q": "x" * 201}, "q", "max_length"),
    ({"q": "a\x00b"}, "q", "characters"),
    ({"cursor": "nonsense"}, "cursor", "cursor"),
    ({"cursor": ""}, "cursor", "cursor"),
    ({"until": "WzFd"}, "until", "cursor"),
]


async def test_a_bad_parameter_is_422_naming_it(
    http: httpx.AsyncClient, branch: dict[str, Any]
) -> None:
    before = await all_cases(http, branch["id"])
    for params, field, rule in BAD:
        answer = await http.get(f"/api/branches/{branch['id']}/cases", params=params)
        assert answer.status_code == 422, (params, answer.text)
        body = answer.json()
        assert (body["error"], body["field"], body["rule"]) == ("validation_error", field, rule)
        assert field in body["message"]
    assert await all_cases(http, branch["id"]) == before


async def test_a_cursor_of_another_sort_or_a_forged_one_is_422(
    http: httpx.AsyncClient, branch: dict[str, Any]
) -> None:
    import base64
    import json

    url = f"/api/branches/{branch['id']}/cases"
    page = (await http.get(url, params={"sort": "status", "limit": 2})).json()
    other = await http.get(url, params={"sort": "-status", "cursor": page["next_cursor"]})
    assert (other.status_code, other.json()["field"]) == (422, "cursor")

    def forged(payload: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    for sort, payload in [
        ("status", ["status", "bogus", 1]),
        ("status", ["status", "new", "1"]),
        ("status", ["status", "new", 0]),
        ("status", ["status", "new", True]),
        ("purchase_date", ["purchase_date", "2024-13-01", 1]),
        ("purchase_date", ["purchase_date", 5, 1]),
        ("assignee_id", ["assignee_id", "me", 1]),
        ("customer_name", ["customer_name", None, 1]),
        ("customer_name", {"sort": "customer_name"}),
    ]:
        answer = await http.get(url, params={"sort": sort, "cursor": forged(payload)})
        assert (answer.status_code, answer.json()["rule"]) == (422, "cursor"), payload
    fine = await http.get(
        url, params={"sort": "purchase_date", "cursor": forged(["purchase_date", None, 1])}
    )
    assert fine.status_code == 200


# -- the cheap sync ---------------------------------------------------------------------


@contextmanager
def statements(services: Services) -> Iterator[list[str]]:
    """Every SQL statement the app runs meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    engine = services.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("params", [{}, {"status": ["new", "ready"], "sort": "customer_name"}])
async def test_a_304_reads_no_case_and_a_change_moves_the_etag(
    http: httpx.AsyncClient, services: Services, branch: dict[str, Any], params: dict[str, Any]
) -> None:
    url = f"/api/branches/{branch['id']}/cases"
    first = await http.get(url, params=params)
    etag = first.headers["etag"]
    with statements(services) as seen:
        cached = await http.get(url, params=params, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.headers["etag"] == etag
    assert seen, "the access check reads the branch"
    assert not [s for s in seen if "warranty_cases" in s], seen
    # Another query is another answer.
    other = await http.get(url, params={**params, "q": "ada"}, headers={"If-None-Match": etag})
    assert other.status_code == 200
    # Any committed change moves it, in the window or not.
    world: World = branch["world"]
    await make_case(services.db, branch_id=branch["id"], by=world.users["bob"], customer_name="Z")
    moved = await http.get(url, params=params, headers={"If-None-Match": etag})
    assert moved.status_code == 200 and moved.headers["etag"] != etag


async def test_assignee_me_is_each_users_own_list(
    app_services: tuple[Any, Services], branch: dict[str, Any]
) -> None:
    transport = httpx.ASGITransport(app=app_services[0])
    lists = {}
    etags = {}
    for who in ("alice", "bob"):
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            await login(client, f"{who}@example.com")
            answer = await client.get(
                f"/api/branches/{branch['id']}/cases", params={"assignee": "me"}
            )
            lists[who] = {c["assignee_id"] for c in answer.json()["cases"]}
            etags[who] = answer.headers["etag"]
    users = branch["world"].users
    assert lists == {"alice": {users["alice"]}, "bob": {users["bob"]}}
    assert etags["alice"] != etags["bob"]


async def test_dates_sort_by_date(http: httpx.AsyncClient, branch: dict[str, Any]) -> None:
    pages = await walk(http, branch["id"], {"sort": "purchase_date", "limit": 50})
    dates = [c["purchase_date"] for c in pages if c["purchase_date"] is not None]
    assert dates == sorted(dates, key=dt.date.fromisoformat)
    assert pages[-1]["purchase_date"] is None
