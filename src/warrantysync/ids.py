"""The one parser for ids that arrive in requests (paths, queries, headers).

An id is 1 to 18 ASCII digits. Python's own checks are wider than that:
``str.isdigit()`` is true for "²" and "①" (which ``int()`` then refuses with a
``ValueError``), and ``int()`` and Pydantic accept "+5", " 5", "5_0" and
"5.0". Every id read from a request goes through :func:`parse_id` instead;
docs/protocol.md ("Ids") states the rule.
"""

from __future__ import annotations

import re

# [0-9], not \d: \d matches every Unicode decimal digit. 18 digits always fit
# a signed 64-bit integer, so no id can overflow a database driver either.
_ASCII_ID = re.compile(r"[0-9]{1,18}")
ID_RULE = "must be a whole number written in 1 to 18 ASCII digits"


def parse_id(value: str) -> int | None:
    """The id ``value`` spells, or None when it is not 1 to 18 ASCII digits."""
    if _ASCII_ID.fullmatch(value) is None:
        return None
    return int(value)


__all__ = ["ID_RULE", "parse_id"]
