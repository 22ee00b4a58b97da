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
    # "token": "..." in JSON (a refresh_token frame, however it is cut short)
    (re.compile(r"(?i)(\"(?:access_|refresh_)?token\"\s*:\s*\")[^\"]*"), r"\1[redacted]"),
    # anything shaped like a JWT (three base64url parts, the first starting with {" encoded)
    (re.compile(r"eyJ[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*"), "[redacted-jwt]"),
    # ... and what is left of one when a log line cut it short
    (re.compile(r"eyJ[A-Za-z0-9\-_.]{8,}"), "[redacted-jwt]"),
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


class DropFrameDumps(logging.Filter):
    """websockets logs every frame's payload at DEBUG ("< TEXT '...'"): documents, cursors, tokens.

    Those lines go through uvicorn's logger, so debug level would turn candidates' code and refreshed
    tokens into log lines; relay logs its own per-connection events instead.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.DEBUG and record.msg in ("< %s", "> %s"))


# uvicorn 0.54 (websockets-sansio) logs these at ERROR for things any client can cause on purpose, so
# they would page someone at will: relay's own denial of a handshake (the Origin check answers with an
# HTTP 403 body, and uvicorn then complains the handshake never completed), and a frame that is not
# UTF-8 (answered with close 1007). They are recorded as what they are.
_CLIENT_CAUSED = {
    "ASGI callable returned without completing handshake.": (
        logging.INFO,
        "websocket handshake refused with an HTTP response",
    ),
    "Invalid UTF-8 sequence received from client.": (
        logging.WARNING,
        "client sent a text frame that is not UTF-8; closed with 1007",
    ),
}


class DowngradeClientCaused(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        downgrade = _CLIENT_CAUSED.get(record.msg) if isinstance(record.msg, str) else None
        if downgrade is not None:
            record.levelno, record.msg = downgrade
            record.levelname = logging.getLevelName(record.levelno)
            record.exc_info = None
            record.exc_text = None
        return True


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
        ids = [
            f"{field}={value}"
            for field in ("request_id", "connection_id", "room_code")
            if (value := getattr(record, field, None))
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


def log_config(settings: Settings) -> dict[str, Any]:
    """A logging.config dict for relay and uvicorn (passed to uvicorn so its workers use it too)."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    formatter: dict[str, Any] = {"()": JSONFormatter if use_json else TextFormatter}
    level = "DEBUG" if settings.log_level == "trace" else settings.log_level.upper()
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "main",
        "filters": ["frames", "client_caused", "redact"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "redact": {"()": RedactSecrets},
            "frames": {"()": DropFrameDumps},
            "client_caused": {"()": DowngradeClientCaused},
        },
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
