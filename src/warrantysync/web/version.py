"""The client version: what a page and the stream's ``ready`` both carry.

The package version plus a digest of the static files, computed once per
process, so a deploy that changes only a script still counts as a new
version. A tab compares the two and reloads when they differ; tabs of
different versions never share a stream (docs/protocol.md, "Tabs sharing
one stream").
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

STATIC = Path(__file__).parent / "static"


@functools.cache
def client_version() -> str:
    from .. import __version__  # the package is initialised by the time a page asks

    digest = hashlib.sha256()
    for path in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        digest.update(path.relative_to(STATIC).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return f"{__version__}+{digest.hexdigest()[:12]}"
