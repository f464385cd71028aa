"""Logging for both processes: key=value lines by default, one JSON object per line with
LOG_FORMAT=json, and connection strings stripped of their passwords.

Stdlib logging rather than structlog: uvicorn, psycopg, psycopg_pool, redis-py and asyncio
all log through it already, so one formatter on the root handler gives every line the same
shape and the same redaction, with no second logging API to learn. Callers put the stable
keys in ``extra``; the message itself is the ``event``, a short lowercase phrase::

    log.info("listener ready", extra={"slot": slot, "lsn": format_lsn(lsn)})

Stable keys: ``event``, ``lsn``, ``slot``, ``key``, ``order_id``, plus ``mode``, ``error``,
``keys``, ``commits`` and ``retry_in`` where they apply. Every line passes through
:func:`redact`, and so must every message a CLI prints about a connection.
"""

from __future__ import annotations

import json
import logging
import logging.config
import re
from datetime import UTC, datetime
from typing import Any, Final, Literal

LogFormat = Literal["text", "json"]

# Attributes every LogRecord has: anything else on a record came from `extra`.
_STANDARD: Final = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured copy of the message
}

# scheme://user:password@host -> scheme://user:***@host (the password runs to the last @
# before the host; quotes end it so a value inside a quoted string stays inside).
_URL_PASSWORD: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s\"']*):[^\s/\"']*@")
# password=... in a key=value DSN or a URL's query string, quoted or not.
_KV_PASSWORD: Final = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&\"']+)", re.I)
_MASK: Final = "***"


def redact(text: str) -> str:
    """`text` with the password of every connection string in it masked."""
    if "://" not in text and "assword" not in text.lower():
        return text  # the common case costs one scan
    text = _URL_PASSWORD.sub(rf"\1:{_MASK}@", text)
    return _KV_PASSWORD.sub(rf"\g<1>{_MASK}", text)


def _plain(value: object) -> object:
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact(str(value))


class _Formatter(logging.Formatter):
    """Turns a record into its fields: time, level, logger, event, then the extras."""

    def fields(self, record: logging.LogRecord) -> dict[str, object]:
        stamp = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, object] = {
            "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": redact(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                out[name] = _plain(value)
        return out

    def traceback(self, record: logging.LogRecord) -> str | None:
        if record.exc_info:
            return redact(self.formatException(record.exc_info))
        if record.stack_info:
            return redact(self.formatStack(record.stack_info))
        return None


class JsonFormatter(_Formatter):
    """One JSON object per line; a traceback goes in ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object per record, its extra fields included."""
        out = self.fields(record)
        trace = self.traceback(record)
        if trace is not None:
            out["exc"] = trace
        return json.dumps(out, ensure_ascii=False, default=str)


class TextFormatter(_Formatter):
    """``key=value`` pairs (logfmt), values quoted when they need it; a traceback follows
    on its own lines, for the human reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        """One line of key=value pairs per record, its extra fields included."""
        line = " ".join(f"{k}={_logfmt(v)}" for k, v in self.fields(record).items())
        trace = self.traceback(record)
        return line if trace is None else f"{line}\n{trace}"


def _logfmt(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if not text or any(c in text for c in ' ="\\\n\t'):
        return json.dumps(text, ensure_ascii=False)
    return text


def logging_config(fmt: LogFormat = "text", level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` schema routing every logger through one stderr handler
    in the chosen format. uvicorn applies it in each worker process it starts."""
    formatter = JsonFormatter if fmt == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"()": f"{__name__}.{formatter.__name__}"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        # uvicorn's own loggers carry handlers of their own unless told otherwise
        "loggers": {
            name: {"handlers": [], "propagate": True}
            for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }


def configure_logging(fmt: LogFormat = "text", level: str = "INFO") -> None:
    """Apply :func:`logging_config` to this process (a second call replaces the first)."""
    logging.config.dictConfig(logging_config(fmt, level))
