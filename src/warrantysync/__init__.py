"""warrantysync: real-time collaborative editing of warranty cases over SSE."""

from __future__ import annotations

from .app import create_app
from .config import Settings

__all__ = ["Settings", "create_app"]
__version__ = "0.1.0"
