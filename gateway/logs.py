"""Logging set-up: text or one JSON object per line; an access line carries its fields in `extra["access"]`."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import Any, TextIO

import orjson


class SecondCache:
    """time.strftime once per second, not once per line: a busy gateway logs thousands a second."""

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._second = -1
        self._text = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._text = second, time.strftime(self._fmt, time.localtime(second))
        return self._text


class JSONFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._time = SecondCache("%Y-%m-%dT%H:%M:%S%z")

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        access = getattr(record, "access", None)
        if access:
            data.update(access)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        self._time = SecondCache("%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        stamp = f"{self._time(record.created)},{int(record.msecs):03d}"
        line = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        access = getattr(record, "access", None)
        if access:
            line += " " + " ".join(f"{name}={value}" for name, value in access.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


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
    # No line carries the caller's file, thread or process: don't pay for finding them on each record
    # (the "Optimization" table of the logging HOWTO).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
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
