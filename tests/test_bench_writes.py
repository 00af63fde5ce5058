"""bench/writes.py's answer parsing: the lean generator counts statuses from it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from writes import parse_response

OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n"
CHUNKED = b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"


def test_a_sized_answer_ends_after_its_body() -> None:
    answer = OK + b'{"ok":true}'
    assert parse_response(answer) == (200, len(OK), len(answer))


def test_two_answers_in_one_read_are_taken_one_at_a_time() -> None:
    second = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"
    first = OK + b'{"ok":true}'
    assert parse_response(first + second) == (200, len(OK), len(first))
    assert parse_response(second) == (429, len(second) - 2, len(second))


@pytest.mark.parametrize("cut", [10, len(OK) - 1, len(OK), len(OK) + 5])
def test_an_incomplete_answer_waits_for_more(cut: int) -> None:
    assert parse_response((OK + b'{"ok":true}')[:cut]) is None


def test_a_chunked_answer_ends_after_its_last_chunk() -> None:
    assert parse_response(CHUNKED) == (409, CHUNKED.index(b"4\r\n"), len(CHUNKED))
    assert parse_response(CHUNKED[:-2]) is None


def test_an_answer_without_a_body() -> None:
    answer = b"HTTP/1.1 204 No Content\r\nserver: x\r\n\r\n"
    assert parse_response(answer + b"HTTP/1.1") == (204, len(answer), len(answer))
