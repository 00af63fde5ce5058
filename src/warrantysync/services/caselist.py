"""The case list a page at a time: filters, search, sort and keyset cursors.

``GET /api/branches/{bid}/cases`` with any of ``limit``, ``cursor``,
``until``, ``q``, ``status``, ``assignee`` or ``sort`` answers one page of
the matching cases (docs/protocol.md, "Listing cases"); without them it keeps
its original answer, every case of the branch.

Every order is a sequence of *segments*, each one index range read in index
order (migration 0004): a column sorted by its value is one segment ordered by
``(column, id)``; a field with choices has one segment per choice in the field
table's order (``new`` before ``closed``), each ordered by ``id``; an empty
date or assignee comes last in a segment of its own, whichever the direction;
the assignee sorts by the member's name, a segment per member. A page reads
the segments from the cursor's on until it has ``limit`` rows, so no query
sorts rows outside an index, and ``id`` breaks every tie.

A cursor is the position *after* one row: the sort it belongs to, that row's
sort value and its id. Paging by it is stable while rows are inserted and
deleted: each row comes at most once, and a row inserted behind the cursor
simply is not on the later pages. The encoding is opaque to clients.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from ..casefields import FIELD, SEARCHABLE, SORTABLE, Status
from ..errors import ValidationFailed
from ..ids import parse_id
from ..jsonutil import JSONDecodeError, dumps, loads
from ..storage.models import WarrantyCase, table

CASES = table(WarrantyCase)
PARAMETERS = frozenset({"limit", "cursor", "until", "q", "status", "assignee", "sort"})
DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_QUERY = 200
SEARCH_INDEX = "ix_warranty_cases_search"
DEFAULT_SORT = "-case_number"
# The default view of the bundled page: the open work.
OPEN_STATUSES = tuple(s.value for s in Status if s not in (Status.closed, Status.rejected))

Column = KeyedColumnElement[Any]
ANY = object()  # a segment holding many values of the sort field


@dataclass(frozen=True, slots=True)
class Key:
    """A position in one order: after (or, for ``until``, at) the row with this value and id."""

    value: Any
    id: int


@dataclass(frozen=True, slots=True)
class ListQuery:
    statuses: tuple[str, ...] = ()  # empty: every status
    assignee: int | None = None
    unassigned: bool = False
    q: str = ""
    sort: str = "case_number"
    descending: bool = True
    limit: int = DEFAULT_LIMIT
    after: Key | None = None
    until: Key | None = None

    @property
    def sort_token(self) -> str:
        return ("-" if self.descending else "") + self.sort

    def canonical(self) -> str:
        """The query in one string: part of the answer's ETag."""
        return dumps(
            [
                sorted(self.statuses),
                self.assignee,
                self.unassigned,
                self.q,
                self.sort_token,
                self.limit,
                None if self.after is None else [_json(self.after.value), self.after.id],
                None if self.until is None else [_json(self.until.value), self.until.id],
            ]
        ).decode()

    def filters(self, dialect: str) -> list[ColumnElement[bool]]:
        """What a row must satisfy, beyond being a live case of the branch.

        The search ignores case: SQLite's ``LIKE`` folds ASCII letters, and
        MariaDB's ``_ci`` collations fold case; PostgreSQL needs ``ILIKE``.
        """
        where: list[ColumnElement[bool]] = []
        if self.statuses:
            where.append(CASES.c.status.in_(self.statuses))
        if self.unassigned:
            where.append(CASES.c.assignee_id.is_(None))
        elif self.assignee is not None:
            where.append(CASES.c.assignee_id == self.assignee)
        if self.q:
            pattern = "%" + _escape_like(self.q) + "%"
            columns = [CASES.c[name] for name in SEARCHABLE]
            if dialect == "postgresql":
                where.append(or_(*(c.ilike(pattern, escape="\\") for c in columns)))
            else:
                where.append(or_(*(c.like(pattern, escape="\\") for c in columns)))
        return where


@dataclass(slots=True)
class Page:
    cases: list[dict[str, Any]]
    cursors: list[str]
    next_cursor: str | None
    total: int


# -- parsing -------------------------------------------------------------------


def _bad(name: str, rule: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{name}: {message}", field=name, rule=rule)


def _one(params: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = params.get(name) or []
    if len(values) > 1:
        raise _bad(name, "repeated", "give it at most once")
    return values[0] if values else None


def is_list_query(params: Mapping[str, Sequence[str]]) -> bool:
    """Whether the request asks for a page (any list parameter), not the whole branch."""
    return any(name in params for name in PARAMETERS)


def parse(params: Mapping[str, Sequence[str]], *, user_id: int) -> ListQuery:
    """The list query the parameters describe; 422 naming the first bad one."""
    limit = DEFAULT_LIMIT
    if (raw := _one(params, "limit")) is not None:
        number = parse_id(raw)
        if number is None or not 1 <= number <= MAX_LIMIT:
            raise _bad("limit", "range", f"must be a whole number from 1 to {MAX_LIMIT}")
        limit = number
    sort = _one(params, "sort")
    sort = DEFAULT_SORT if sort is None else sort
    name = sort.removeprefix("-")
    if name not in SORTABLE:
        raise _bad(
            "sort", "choice", f"must be one of {', '.join(SORTABLE)}, '-' first for descending"
        )
    statuses: list[str] = []
    for value in params.get("status") or []:
        if value not in Status.__members__:
            choices = ", ".join(s.value for s in Status)
            raise _bad("status", "choice", f"each must be one of {choices}")
        if value not in statuses:
            statuses.append(value)
    assignee: int | None = None
    unassigned = False
    if (raw := _one(params, "assignee")) is not None:
        if raw == "none":
            unassigned = True
        elif raw == "me":
            assignee = user_id
        elif (number := parse_id(raw)) is not None:
            assignee = number
        else:
            raise _bad("assignee", "assignee", "must be a user id, 'me' or 'none'")
    q = (_one(params, "q") or "").strip()
    if len(q) > MAX_QUERY:
        raise _bad("q", "max_length", f"must be at most {MAX_QUERY} characters")
    if "\x00" in q:
        raise _bad("q", "characters", "must not contain NUL characters")
    query = ListQuery(
        statuses=tuple(statuses),
        assignee=assignee,
        unassigned=unassigned,
        q=q,
        sort=name,
        descending=sort.startswith("-"),
        limit=limit,
    )
    after = _one(params, "cursor")
    until = _one(params, "until")
    return dataclasses.replace(
        query,
        after=None if after is None else decode_cursor(after, query, "cursor"),
        until=None if until is None else decode_cursor(until, query, "until"),
    )


# -- cursors -------------------------------------------------------------------


def _json(value: Any) -> Any:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Status | str):
        return str(value)
    return value


def key_of(query: ListQuery, row: Any) -> Key:
    """The position just after ``row`` (a row of the cases table) in ``query``'s order."""
    value = None if query.sort == "case_number" else row._mapping[query.sort]
    return Key(value, row.id)


def encode_cursor(query: ListQuery, value: Any, case_id: int) -> str:
    raw = dumps([query.sort_token, _json(value), case_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(token: str, query: ListQuery, name: str) -> Key:
    bad = _bad(name, "cursor", "is not a cursor of this list (pass back next_cursor or cursors)")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        sort, value, case_id = loads(raw)
    except (binascii.Error, JSONDecodeError, ValueError, TypeError):
        raise bad from None
    if sort != query.sort_token or isinstance(case_id, bool) or not isinstance(case_id, int):
        raise bad
    if not 1 <= case_id < 2**63:
        raise bad
    spec = FIELD[query.sort]
    if query.sort == "case_number":
        value = None
    elif spec.json_type == "date":
        if value is not None:
            try:
                value = dt.date.fromisoformat(value)
            except (TypeError, ValueError):
                raise bad from None
    elif spec.json_type == "integer":
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**63
        ):
            raise bad
    elif not isinstance(value, str) or (
        spec.choices is not None and value not in spec.choices.__members__
    ):
        raise bad
    return Key(value, case_id)


# -- segments ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Segment:
    """One index range of an order: rows matching ``where``, by ``(column, id)`` or ``id``."""

    where: tuple[ColumnElement[bool], ...]
    column: Column | None = None
    # The one value of the sort field in this segment (a choice, a member, or
    # None for the empty ones); a filter that excludes it skips the segment.
    value: Any = ANY

    def wanted(self, query: ListQuery) -> bool:
        if self.value is ANY:
            return True
        if query.sort == "status" and query.statuses:
            return self.value in query.statuses
        if query.sort == "assignee_id" and query.unassigned:
            return self.value is None
        if query.sort == "assignee_id" and query.assignee is not None:
            return bool(self.value == query.assignee)
        return True


@dataclass(frozen=True, slots=True)
class Order:
    segments: tuple[Segment, ...]
    descending: bool
    # The segment a sort value falls in.
    rank: dict[Any, int]
    other: int | None = None  # the rank of values not in ``rank`` (former members)

    def rank_expression(self) -> ColumnElement[int] | None:
        """The segment each row falls in, as SQL (None for a one-segment order)."""
        if len(self.segments) == 1:
            return None
        return case(*((and_(*seg.where), n) for n, seg in enumerate(self.segments)))

    @property
    def column(self) -> Column | None:
        return next((seg.column for seg in self.segments if seg.column is not None), None)

    def rank_of(self, value: Any) -> int:
        if value in self.rank:
            return self.rank[value]
        assert self.other is not None, value
        return self.other


def order_of(query: ListQuery, members: Sequence[tuple[int, str]]) -> Order:
    """``members``: the branch's (user id, name), for the assignee order."""
    name, desc = query.sort, query.descending
    column = CASES.c[name]
    spec = FIELD[name]
    if name == "case_number":
        return Order((Segment(()),), desc, {None: 0})
    if spec.choices is not None:
        values = [choice.value for choice in spec.choices]
        if desc:
            values.reverse()
        return Order(
            tuple(Segment((column == v,), value=v) for v in values),
            desc,
            {v: i for i, v in enumerate(values)},
        )
    if name == "assignee_id":
        ordered = sorted(members, key=lambda m: (m[1].casefold(), m[0]))
        if desc:
            ordered.reverse()
        ids = [uid for uid, _name in ordered]
        segments = [Segment((column == uid,), value=uid) for uid in ids]
        others = len(segments)
        # A former member's cases, by their id: no name to sort by in the branch.
        segments.append(Segment((column.isnot(None), column.notin_(ids)), column))
        segments.append(Segment((column.is_(None),), value=None))
        rank: dict[Any, int] = {uid: i for i, uid in enumerate(ids)}
        rank[None] = others + 1
        return Order(tuple(segments), desc, rank, other=others)
    if spec.nullable:
        return Order(
            (Segment((column.isnot(None),), column), Segment((column.is_(None),), value=None)),
            desc,
            {None: 1},
            other=0,
        )
    return Order((Segment((), column),), desc, {}, other=0)


def _after(segment: Segment, key: Key, desc: bool, inclusive: bool = False) -> ColumnElement[bool]:
    """Rows of ``segment`` after ``key`` (``inclusive``: at or before it, for ``until``)."""
    ident = CASES.c.id
    if inclusive:
        past_id = ident >= key.id if desc else ident <= key.id
    else:
        past_id = ident < key.id if desc else ident > key.id
    column = segment.column
    if column is None:
        return past_id
    if inclusive:
        return (
            and_(column >= key.value, or_(column > key.value, past_id))
            if desc
            else and_(column <= key.value, or_(column < key.value, past_id))
        )
    return (
        and_(column <= key.value, or_(column < key.value, past_id))
        if desc
        else and_(column >= key.value, or_(column > key.value, past_id))
    )


def _statements(
    query: ListQuery, order: Order, base: list[ColumnElement[bool]]
) -> list[Select[Any]]:
    """One ordered statement per segment the page may read, in order."""
    start = 0 if query.after is None else order.rank_of(query.after.value)
    stop = len(order.segments) - 1 if query.until is None else order.rank_of(query.until.value)
    statements = []
    for index in range(start, stop + 1):
        segment = order.segments[index]
        if not segment.wanted(query):
            continue
        where = [*base, *segment.where]
        if query.after is not None and index == start:
            where.append(_after(segment, query.after, order.descending))
        if query.until is not None and index == stop:
            where.append(_after(segment, query.until, order.descending, inclusive=True))
        keys = [CASES.c.id] if segment.column is None else [segment.column, CASES.c.id]
        statements.append(
            select(CASES)
            .where(*where)
            .order_by(*(k.desc() if order.descending else k.asc() for k in keys))
        )
    return statements


async def read_page(
    session: AsyncSession,
    *,
    branch_id: int,
    query: ListQuery,
    members: Sequence[tuple[int, str]],
    count: bool = True,
) -> tuple[list[Any], bool, int]:
    """The page's rows, whether more follow in the range asked for, and the total matches.

    ``count=False`` skips counting where it would cost a pass of its own
    (the total is then 0, or what the first page of a search counted anyway).
    """
    dialect = session.get_bind().dialect.name
    base = [CASES.c.branch_id == branch_id, CASES.c.deleted_at.is_(None), *query.filters(dialect)]
    order = order_of(query, members)
    want = query.limit + 1  # one more: whether another page follows
    if query.q:
        rows, total = await _searched(session, query, order, base, want, count)
    else:
        total = await _count(session, base) if count else 0
        rows = []
        for statement in _statements(query, order, base) if total or not count else []:
            result = await session.execute(statement.limit(want - len(rows)))
            rows.extend(result.all())
            if len(rows) >= want:
                break
    return rows[: query.limit], len(rows) > query.limit, total


async def _count(session: AsyncSession, where: list[ColumnElement[bool]]) -> int:
    return int(await session.scalar(select(func.count()).select_from(CASES).where(*where)) or 0)


async def _searched(
    session: AsyncSession,
    query: ListQuery,
    order: Order,
    base: list[ColumnElement[bool]],
    want: int,
    count: bool,
) -> tuple[list[Any], int]:
    """A search's page and its total, from the index that holds every searched and sorted column.

    A search tests every row of the branch. Walking a sort index and testing
    each row would read the rows of every non-match (their notes and all);
    the wide index answers the search and the order on its own, and only the
    page's rows are read. The first page counts the matches in the same pass.
    The planners of SQLite and MariaDB would rather walk the sort index to
    skip the sort, so MariaDB is told which index to use and SQLite's sort
    keys are ``Unindexed``.
    """
    rank = order.rank_expression()
    where = list(base)
    for key, inclusive in ((query.after, False), (query.until, True)):
        if key is None:
            continue
        at = order.rank_of(key.value)
        within = _after(order.segments[at], key, order.descending, inclusive=inclusive)
        if rank is None:
            where.append(within)
        else:
            beyond = rank < at if inclusive else rank > at
            where.append(or_(beyond, and_(rank == at, within)))
    keys: list[ColumnElement[Any]] = [] if rank is None else [rank]
    direction = [] if order.column is None else [order.column]
    direction.append(CASES.c.id)
    keys += [Unindexed(k).desc() if order.descending else Unindexed(k).asc() for k in direction]
    first = query.after is None and query.until is None
    counted = [func.count().over()] if first else []
    statement = select(CASES.c.id, *counted).where(*where).order_by(*keys).limit(want)
    for dialect in ("mysql", "mariadb"):
        statement = statement.with_hint(CASES, f"FORCE INDEX ({SEARCH_INDEX})", dialect)
    found = (await session.execute(statement)).all()
    if first:
        total = int(found[0][1]) if found else 0
    else:
        total = await _count(session, base) if count else 0
    ids = [row[0] for row in found]
    if not ids:
        return [], total
    rows = {row.id: row for row in await session.execute(select(CASES).where(CASES.c.id.in_(ids)))}
    return [rows[i] for i in ids if i in rows], total


class Unindexed(ColumnElement[Any]):
    """A sort key no index may serve: SQLite's ``+column`` (a no-op on any value)."""

    inherit_cache = True
    _traverse_internals = [("inner", InternalTraversal.dp_clauseelement)]

    def __init__(self, inner: ColumnElement[Any]) -> None:
        self.inner = inner
        self.type = inner.type


@compiles(Unindexed)
def _plain_key(element: Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.inner, **kw)


@compiles(Unindexed, "sqlite")
def _sqlite_key(element: Unindexed, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.inner, **kw)


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "OPEN_STATUSES",
    "PARAMETERS",
    "Key",
    "ListQuery",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "is_list_query",
    "key_of",
    "order_of",
    "parse",
    "read_page",
]
