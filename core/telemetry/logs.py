"""Structured logs: text for people, JSON for collectors, trace ids on every line.

:func:`configure_logging` replaces the root logger's handlers with one that
writes ``settings.logging.format``. A filter adds to every record the
``trace_id`` and ``span_id`` of the span current when it was logged (or,
when this process does not trace, the caller's trace id from its
``traceparent``) and the caller's ``correlation_id``. The access log
(logger ``praefect.access``) writes one line per call; its fields travel
in ``extra={"fields": {...}}`` and appear as ``key=value`` in text and as
keys of the JSON object.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from opentelemetry import trace

__all__ = [
    "ACCESS_LOGGER",
    "JsonFormatter",
    "TextFormatter",
    "TraceContextFilter",
    "configure_logging",
    "log_handler",
]

ACCESS_LOGGER = "praefect.access"
FORMATS = ("text", "json")
_TEXT_PREFIX = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id``, ``span_id`` and ``correlation_id`` to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "trace_id", None) is None:
            trace_id = span_id = ""
            context = trace.get_current_span().get_span_context()
            if context.is_valid:
                trace_id = format(context.trace_id, "032x")
                span_id = format(context.span_id, "016x")
            call = _current_call()
            if call is not None:
                trace_id = trace_id or call.caller_trace_id
                record.correlation_id = call.correlation_id
            record.trace_id = trace_id
            record.span_id = span_id
        if getattr(record, "correlation_id", None) is None:
            record.correlation_id = ""
        return True


def _current_call() -> Any:
    # Imported late: calls.py imports this module for the access log.
    from praefect.core.telemetry.calls import current_call

    return current_call()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ... trace_id=... span_id=...``."""

    def __init__(self) -> None:
        super().__init__(_TEXT_PREFIX)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{key}={_text_value(value)}" for key, value in _fields(record).items() if value != ""]
        for key in ("correlation_id", "trace_id", "span_id"):
            value = getattr(record, key, "")
            if value:
                extras.append(f"{key}={value}")
        if not extras:
            return line
        # the traceback, if any, stays last
        head, newline, tail = line.partition("\n")
        return f"{head} {' '.join(extras)}{newline}{tail}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``trace_id``/``span_id`` are always present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        entry["correlation_id"] = getattr(record, "correlation_id", "")
        entry["trace_id"] = getattr(record, "trace_id", "")
        entry["span_id"] = getattr(record, "span_id", "")
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, Mapping) else {}


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(ch.isspace() or ch in "\"=" for ch in text):
        return json.dumps(text)
    return text


def log_handler(log_format: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) writing ``log_format`` with trace ids."""
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}: use text or json")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(TraceContextFilter())
    return handler


def configure_logging(
    log_format: str = "text", level: str | int | None = None, stream: TextIO | None = None
) -> logging.Handler:
    """Make the root logger write ``log_format`` lines to ``stream`` (stderr).

    ``level`` (``"info"``, ``logging.DEBUG`` ...) None keeps the root level.
    Replaces the root's handlers, e.g. those of ``logging.basicConfig``.
    """
    handler = log_handler(log_format, stream)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler
