"""Logging: readable text for people, one JSON object per line for machines.

One configuration for the whole process (``logging_config``), handed to
uvicorn so that its error and access loggers write through the same handler
and formatter as ours, in the supervisor and in every worker it spawns: with
``WARRANTYSYNC_LOG_FORMAT=json`` every line on standard error is JSON.
A log line written while a request is being served carries that request's
id (``REQUEST_ID``, set by the edge; the same id goes out as ``X-Request-Id``).
"""

from __future__ import annotations

import datetime as dt
import logging
import logging.config
import os
from contextvars import ContextVar
from typing import Any

from .jsonutil import dumps_str

__all__ = ["REQUEST_ID", "JsonFormatter", "TextFormatter", "configure_logging", "logging_config"]

REQUEST_ID: ContextVar[str | None] = ContextVar("warrantysync_request_id", default=None)

# uvicorn.access formats `'%s - "%s %s HTTP/%s" %d'` from these arguments.
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")


def utc_timestamp(created: float) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-25T10:00:30.123Z``."""
    moment = dt.datetime.fromtimestamp(created, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": utc_timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        args = record.args
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            entry.update(zip(_ACCESS_FIELDS, args, strict=True))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return dumps_str(entry)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_timestamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        if request_id is None:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [request {request_id}]{newline}{rest}"


def logging_config(fmt: str, level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the whole process (uvicorn's loggers included)."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    propagate = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        # Loggers made at import (every module's `log`) must keep working.
        "disable_existing_loggers": False,
        "formatters": {"main": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "main",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            name: dict(propagate)
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "warrantysync")
        },
    }


_configured: tuple[str, int] | None = None


def configure_logging(fmt: str) -> None:
    """Apply ``logging_config(fmt)`` once per process (again only for another format)."""
    global _configured
    if _configured == (fmt, os.getpid()):
        return
    logging.config.dictConfig(logging_config(fmt))
    logging.captureWarnings(True)
    _configured = (fmt, os.getpid())
