"""Logging: readable text for people, one JSON object per line for machines."""

from __future__ import annotations

import logging
import sys
from typing import Any

from .jsonutil import dumps_str


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return dumps_str(entry)


def configure_logging(fmt: str, level: int = logging.INFO) -> None:
    root = logging.getLogger("warrantysync")
    if getattr(root, "_warrantysync_configured", None) == fmt:
        return
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.handlers = [handler]
    root.setLevel(level)
    root.propagate = False
    root._warrantysync_configured = fmt  # type: ignore[attr-defined]
