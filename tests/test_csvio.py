"""services/csvio.py without a database: the formula guard and reading a file."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from warrantysync.services import csvio

RISKY_STARTS = "=+-@\t\r'"


@given(
    st.text(alphabet=st.sampled_from([*RISKY_STARTS, "a", " ", "1", "é"]), max_size=6) | st.text()
)
def test_escape_never_leaves_a_formula_and_unescape_undoes_it(text: str) -> None:
    escaped = csvio.escape(text)
    assert not escaped or escaped[0] not in "=+-@\t\r"
    assert csvio.unescape(escaped) == text


def test_escape_adds_one_quote_only_where_needed() -> None:
    assert csvio.escape("=1+1") == "'=1+1"
    assert csvio.escape("'=1+1") == "''=1+1"
    assert csvio.escape("''x") == "'''x"
    assert csvio.escape("'x") == "'x"
    assert csvio.escape("'") == "'"
    assert csvio.escape("1=1") == "1=1"
    assert csvio.escape("") == ""


def test_records_keep_their_first_line_and_blank_lines_are_skipped() -> None:
    data = b'customer_name,notes\r\n"A",one\r\n\r\nB,"two\nlines"\r\nC,three\r\n'
    rows, errors = csvio.read(data)
    assert errors == []
    assert [(row.line, row.cells["customer_name"]) for row in rows] == [
        (2, "A"),
        (4, "B"),
        (6, "C"),
    ]
    assert rows[1].cells["notes"] == "two\nlines"


def test_read_only_columns_of_an_export_are_skipped() -> None:
    rows, errors = csvio.read(b"id,case_number,customer_name,version\n7,WC-000007,A,3\n")
    assert errors == [] and rows[0].cells == {"customer_name": "A"}


def test_values_are_what_the_api_would_be_sent() -> None:
    row = csvio.Row(
        2, {"customer_name": "'=A", "assignee_id": "12", "purchase_date": "", "notes": ""}
    )
    assert csvio.values_of(row) == {"customer_name": "'=A", "assignee_id": 12}
    odd = csvio.Row(3, {"customer_name": "B", "assignee_id": "１２"})
    assert csvio.values_of(odd) == {
        "customer_name": "B",
        "assignee_id": "１２",
    }  # the rule refuses it
