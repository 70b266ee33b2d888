"""LogSink: one JSON line per event to stdout or a file, flushed before the answer."""

from __future__ import annotations

import sys
from typing import BinaryIO

from gateway.errors import SinkUnavailable
from gateway.model import StatusEvent


class LogSink:
    def __init__(self, path: str) -> None:
        self._path = path
        self._out: BinaryIO | None = None

    async def open(self) -> None:
        try:
            self._out = sys.stdout.buffer if self._path == "-" else open(self._path, "ab")  # noqa: SIM115
        except OSError as exc:
            raise SinkUnavailable(f"cannot open log sink {self._path}: {exc.strerror}") from exc

    async def write(self, event: StatusEvent) -> bool:
        # The log is a record of every verified callback; a retry is printed again (it cannot tell).
        assert self._out is not None
        try:
            self._out.write(event.dumps() + b"\n")
            self._out.flush()
        except OSError as exc:
            raise SinkUnavailable(f"cannot write the log sink: {exc.strerror}") from exc
        return True

    async def ready(self) -> bool:
        return self._out is not None and not self._out.closed

    async def close(self) -> None:
        if self._out is not None and self._out is not sys.stdout.buffer:
            self._out.close()
