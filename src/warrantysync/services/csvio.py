"""Cases as CSV: the export's rows and the import's parsing (docs/protocol.md, "CSV").

The columns are the members of a case's JSON, in that order, named as in the
JSON (``casefields.COLUMNS``), so an export can be imported again as it is.
Values are their JSON forms as text: dates ``YYYY-MM-DD``, times ISO 8601 in
UTC with ``Z``, choices by value, the assignee by user id, null as an empty
cell. UTF-8, a header row, RFC 4180 quoting with CRLF line ends.

Spreadsheets run a cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return as a formula (a customer named ``=HYPERLINK(…)`` would
be a link on every colleague's screen). Such a text is written with a ``'``
in front, which spreadsheets show as "this is text"; so is a text that
already starts with ``'`` followed by one of those characters or another
``'``, so that reading it back takes exactly one ``'`` away and every value
comes back as it was.
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..casefields import COLUMNS, EDITABLE, FIELD

TRIGGERS = frozenset("=+-@\t\r")
QUOTE = "'"
ENCODING = "utf-8"
# Read-only columns an export carries; an import skips them (new numbers, versions).
IGNORED_ON_IMPORT = frozenset(name for name in COLUMNS if not FIELD[name].editable)
IMPORTED = tuple(spec.name for spec in EDITABLE)


def escape(text: str) -> str:
    """``text`` made safe to open in a spreadsheet (see the module docstring)."""
    if text and (
        text[0] in TRIGGERS
        or (text[0] == QUOTE and len(text) > 1 and text[1] in TRIGGERS | {QUOTE})
    ):
        return QUOTE + text
    return text


def unescape(text: str) -> str:
    """The inverse of ``escape``."""
    if len(text) > 1 and text[0] == QUOTE and text[1] in TRIGGERS | {QUOTE}:
        return text[1:]
    return text


# -- export --------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):  # enum members too: StrEnum
        return escape(value.value if isinstance(value, enum.Enum) else value)
    if isinstance(value, dt.datetime):
        return value.isoformat() + "Z"  # stored naive UTC (storage/models.py)
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


class Writer:
    """CSV text for rows of the cases table (or anything mapping the columns)."""

    def __init__(self) -> None:
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\r\n")

    def _take(self) -> str:
        text = self._buffer.getvalue()
        self._buffer.seek(0)
        self._buffer.truncate()
        return text

    def header(self) -> str:
        self._csv.writerow(COLUMNS)
        return self._take()

    def rows(self, rows: Iterable[Mapping[str, Any]]) -> str:
        self._csv.writerows([_cell(row[name]) for name in COLUMNS] for row in rows)
        return self._take()


# -- import --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    """One reason a line of the file cannot be imported."""

    line: int
    field: str
    rule: str
    message: str

    def as_json(self) -> dict[str, Any]:
        return {"line": self.line, "field": self.field, "rule": self.rule, "message": self.message}


@dataclass(frozen=True, slots=True)
class Row:
    """A record of the file: its first line and its cells by column, unescaped."""

    line: int
    cells: dict[str, str]


def _value(name: str, cell: str) -> Any:
    """A cell as the JSON value the API would have been sent."""
    if FIELD[name].json_type == "integer":
        return int(cell) if cell.isascii() and cell.isdigit() and len(cell) <= 18 else cell
    return cell


def values_of(row: Row) -> dict[str, Any]:
    """The fields the row gives, as a create's JSON body: empty cells are left to the defaults."""
    return {name: _value(name, cell) for name, cell in row.cells.items() if cell != ""}


def read(
    data: bytes, *, on_row: Callable[[], None] | None = None
) -> tuple[list[Row], list[RowError]]:
    """The file's records, or why the file as a whole cannot be read.

    Problems with the file itself (its encoding, its header) come back as
    errors and no rows; a record with the wrong number of cells is an error
    of its own line, and the others are still returned for validation.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return [], [RowError(line, "", "encoding", "the file is not UTF-8 text")]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    errors: list[RowError] = []
    try:
        header = next(reader, None)
        if header is None:
            return [], [
                RowError(1, "", "header", "the file is empty: the first line names the columns")
            ]
        names = [name.strip() for name in header]
        errors += _check_header(names)
        if errors:
            return [], errors
        kept = [(n, name) for n, name in enumerate(names) if name not in IGNORED_ON_IMPORT]
        start = reader.line_num + 1
        for record in reader:
            line, start = start, reader.line_num + 1
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            if len(record) != len(names):
                errors.append(
                    RowError(
                        line,
                        "",
                        "columns",
                        f"has {len(record)} cells; the header names {len(names)} columns",
                    )
                )
                continue
            rows.append(Row(line, {name: unescape(record[n]) for n, name in kept}))
            if on_row is not None:
                on_row()
    except csv.Error as exc:
        errors.append(RowError(reader.line_num, "", "csv", f"cannot be read as CSV ({exc})"))
    return rows, errors


def _check_header(names: list[str]) -> list[RowError]:
    errors = []
    seen: set[str] = set()
    for name in names:
        if name in seen:
            errors.append(RowError(1, name, "duplicate", f"{name}: the column is named twice"))
        elif name not in FIELD:
            known = ", ".join(IMPORTED)
            errors.append(
                RowError(1, name, "unknown_field", f"{name}: no such field (columns: {known})")
            )
        seen.add(name)
    if "customer_name" not in seen:
        errors.append(
            RowError(1, "customer_name", "required", "customer_name: the file needs this column")
        )
    return errors


__all__ = [
    "ENCODING",
    "IGNORED_ON_IMPORT",
    "IMPORTED",
    "Row",
    "RowError",
    "Writer",
    "escape",
    "read",
    "unescape",
    "values_of",
]
