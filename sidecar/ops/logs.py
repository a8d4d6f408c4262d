"""Logging of the sidecar processes: one line per event on stderr, plain text or JSON.

:func:`configure` sets the root logger up once, at start-up. The level comes from ``--log-level``,
else ``$SIDECAR_LOG_LEVEL``, else ``info``; the format from ``--log-format``, else
``$SIDECAR_LOG_FORMAT``, else ``plain``. Fields given with ``extra=`` (``request_id``, ``status``,
``method``, ``path``, ``ms``, ``provider``, ``client`` ...) are part of the line in both formats.

``plain``, for people: ``TIME LEVEL logger: message key=value ...`` (a value with spaces or quotes is
written as a JSON string; a traceback follows on its own lines)::

    2024-05-01T12:00:00.123Z INFO sidecar.access: POST / 200 request_id=0007a1b2c3d40001 status=200

``json``, for machines: one object per line, ``ts`` (ISO-8601 UTC, milliseconds), ``level`` (lower
case), ``logger``, ``msg``, the extra fields, and ``exc`` (the traceback, still on the one line)::

    {"ts":"2024-05-01T12:00:00.123Z","level":"info","logger":"sidecar.access","msg":"POST / 200","status":200}

The consumer's access log is the logger :data:`ACCESS` (one INFO line per call).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any, TextIO

from sidecar.codecs.tunnel import hex_id
from sidecar.runtime.settings import ACCESS_LOGGER

__all__ = ["ACCESS", "FORMATS", "LEVELS", "JsonFormatter", "PlainFormatter", "configure", "extras", "hex_id"]

ACCESS = ACCESS_LOGGER  # the logger of the consumer's access log
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("plain", "json")
DEFAULT_LEVEL = "info"
DEFAULT_FORMAT = "plain"

# The attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def extras(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given to the logging call with ``extra=``, in the order given."""
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _timestamp(record: logging.LogRecord) -> str:
    seconds, millis = divmod(round(record.created * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; values JSON cannot carry are written with ``str``."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in extras(record).items():
            out.setdefault(key, value)  # an extra cannot overwrite the four fields above
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, separators=(",", ":"))


class PlainFormatter(logging.Formatter):
    """``TIME LEVEL logger: message key=value ...``; a traceback on the lines after."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_timestamp(record), record.levelname, f"{record.name}: {record.getMessage()}"]
        parts += [f"{key}={_plain_value(value)}" for key, value in extras(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _plain_value(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    if not text or any(c in text for c in ' "=\n\t'):
        return json.dumps(text)
    return text


def configure(level: str | None = None, fmt: str | None = None, *, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in ``fmt``, replacing the
    root logger's handlers. ``None`` means ``$SIDECAR_LOG_LEVEL`` / ``$SIDECAR_LOG_FORMAT``, then
    ``info`` / ``plain``. Raises ValueError for an unknown level or format. Returns the handler."""
    level = (level or os.environ.get("SIDECAR_LOG_LEVEL") or DEFAULT_LEVEL).lower()
    fmt = (fmt or os.environ.get("SIDECAR_LOG_FORMAT") or DEFAULT_FORMAT).lower()
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (known: {', '.join(LEVELS)})")
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (known: {', '.join(FORMATS)})")
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PlainFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    return handler
