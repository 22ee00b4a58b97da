"""Logging: JSON lines for machines, readable lines on a terminal, and never a token in either.

Browsers send the WebSocket token in the query string, and uvicorn logs request paths with their
query, so every record passes `RedactSecrets` before any handler formats it.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
from typing import Any

import orjson

from relay.config import Settings

_SECRET_PATTERNS = (
    # token=..., access_token=..., refresh_token=... in query strings and URLs
    (re.compile(r"(?i)((?:access_|refresh_)?token=)[^&\s\"']+"), r"\1[redacted]"),
    # Authorization: Bearer ...
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9\-_.=+/]+"), r"\1[redacted]"),
    # anything shaped like a JWT (three base64url parts, the first starting with {" encoded)
    (re.compile(r"eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*"), "[redacted-jwt]"),
)


# Set per HTTP request (middleware in app.py) and per WebSocket connection (ws.py); asyncio copies the
# context into the tasks a handler starts, so every line logged on their behalf carries the ids.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
connection_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("connection_id", default=None)
room_code: contextvars.ContextVar[str | None] = contextvars.ContextVar("room_code", default=None)
# Set by create_app in each worker process; formatters read it at format time.
replica: dict[str, str] = {"id": ""}


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactSecrets(logging.Filter):
    """Renders the message with its args, redacts it, and stores the result as the message."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        record.request_id = request_id.get()
        record.connection_id = connection_id.get()
        record.room_code = room_code.get()
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, replica and the ids of the context."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if replica["id"]:
            entry["replica"] = replica["id"]
        for field in ("request_id", "connection_id", "room_code"):
            value = getattr(record, field, None)
            if value:
                entry[field] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a terminal, with the context's ids appended when there are any."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [f"{field}={value}" for field in ("request_id", "connection_id", "room_code")
               if (value := getattr(record, field, None))]
        return f"{line} [{' '.join(ids)}]" if ids else line


def log_config(settings: Settings) -> dict[str, Any]:
    """A logging.config dict for relay and uvicorn (passed to uvicorn so its workers use it too)."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    formatter: dict[str, Any] = {"()": JSONFormatter if use_json else TextFormatter}
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    handler = {"class": "logging.StreamHandler", "formatter": "main", "filters": ["redact"],
               "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactSecrets}},
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "loggers": {
            "relay": {"handlers": ["main"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["main"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": ["main"], "level": level, "propagate": False},
        },
        "root": {"handlers": ["main"], "level": "WARNING"},
    }
