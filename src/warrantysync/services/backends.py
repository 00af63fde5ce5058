"""Choosing a backend by URL scheme, once for locks, presence and fan-out."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def by_scheme(url: str | None, *, package: str, memory: Callable[[], T], redis: str) -> T:
    """``None``/``memory://`` → ``memory()``; ``redis://`` → ``<package>.redis.<redis>(url)``.

    The Redis module is imported only here, so Redis stays an optional extra.
    """
    if url is None or url == "memory://":
        return memory()
    if url.startswith(REDIS_SCHEMES):
        backend: T = getattr(importlib.import_module(".redis", package), redis)(url)
        return backend
    scheme = url.split("://", 1)[0] if "://" in url else url
    raise ValueError(
        f"unsupported backend scheme {scheme!r} for {package}: use memory:// or redis://"
    )
