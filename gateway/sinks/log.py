"""LogSink: one JSON line per event to stdout or a file, written out before the answer.

Lines of events that arrive in the same event-loop turn go out in one write(2): each request
still waits until its own line is written, but a burst of callbacks costs one system call.
"""

from __future__ import annotations

import asyncio
import sys
from typing import BinaryIO

from gateway.errors import SinkUnavailable
from gateway.model import StatusEvent
from gateway.sinks.base import settle


class LogSink:
    def __init__(self, path: str) -> None:
        self._path = path
        self._out: BinaryIO | None = None
        self._lines: list[bytes] = []
        self._waiters: list[asyncio.Future[bool]] = []

    async def open(self) -> None:
        try:
            self._out = sys.stdout.buffer if self._path == "-" else open(self._path, "ab")  # noqa: SIM115
        except OSError as exc:
            raise SinkUnavailable(f"cannot open log sink {self._path}: {exc.strerror}") from exc

    def write(self, event: StatusEvent) -> asyncio.Future[bool]:
        # The log is a record of every verified callback; a retry is printed again (it cannot tell).
        loop = asyncio.get_running_loop()
        if not self._lines:
            loop.call_soon(self._flush)
        self._lines.append(event.dumps())
        waiter = loop.create_future()
        self._waiters.append(waiter)
        return waiter

    def _flush(self) -> None:
        lines, waiters = self._lines, self._waiters
        self._lines, self._waiters = [], []
        outcome: bool | SinkUnavailable = True
        try:
            assert self._out is not None, "open() first"
            self._out.write(b"\n".join(lines) + b"\n")
            self._out.flush()
        except OSError as exc:
            outcome = SinkUnavailable(f"cannot write the log sink: {exc.strerror}")
        for waiter in waiters:
            settle(waiter, outcome)

    async def ready(self) -> bool:
        return self._out is not None and not self._out.closed

    async def close(self) -> None:
        if self._lines:
            self._flush()
        if self._out is not None and self._out is not sys.stdout.buffer:
            self._out.close()
