"""Logging set-up: text or one JSON object per line; the access line carries its fields as `extra`."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TextIO

import orjson

ACCESS_FIELDS = ("provider", "endpoint", "outcome", "message_id", "status", "latency_ms", "http_status")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ACCESS_FIELDS:
            if hasattr(record, name):
                data[name] = getattr(record, name)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [f"{name}={getattr(record, name)}" for name in ACCESS_FIELDS if hasattr(record, name)]
        return f"{line} {' '.join(extras)}" if extras else line


class TurnFlushingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Flushes access lines once per event-loop turn; any other line at once (with those before it).

    Under load, a turn answers many requests: one write(2) for all their access lines instead of
    one each. A SIGKILL can lose at most the access lines of the turn in progress, never an event.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._scheduled = False
        self._deferring = False

    def emit(self, record: logging.LogRecord) -> None:
        self._deferring = record.name == "gateway.access"
        super().emit(record)

    def flush(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or not self._deferring:
            super().flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._scheduled = False
        super().flush()


def configure_logging(level: str, fmt: str) -> None:
    # stderr is line-buffered (every line a write(2)); this stream buffers until the handler flushes.
    stream = open(sys.stderr.fileno(), "w", buffering=1 << 16, encoding="utf-8",  # noqa: SIM115
                  errors="backslashreplace", closefd=False)
    handler = TurnFlushingHandler(stream)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    for name in ("gateway", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
