"""LogSink: one JSON line per event to stdout or a file, written out before the answer.

Lines of events that arrive in the same event-loop turn go out in one write(2): each request
still waits until its own line is written, but a burst of callbacks costs one system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import BinaryIO

from gateway.errors import SinkUnavailable
from gateway.model import StatusEvent
from gateway.sinks.batch import Batcher, Observe


class LogSink:
    def __init__(self, path: str, *, observe: Observe | None = None) -> None:
        self._path = path
        self._out: BinaryIO | None = None
        # The last write failed: not ready until one succeeds (a probe line would pollute the log).
        self._failing = False
        self._lines: Batcher[bytes] = Batcher(self._write_lines, what="the log sink", max_batch=1 << 16,
                                              observe=observe)

    async def open(self) -> None:
        try:
            self._out = sys.stdout.buffer if self._path == "-" else open(self._path, "ab")  # noqa: SIM115
        except OSError as exc:
            raise SinkUnavailable(f"cannot open log sink {self._path}: {exc.strerror}") from exc

    def write(self, event: StatusEvent) -> asyncio.Future[bool]:
        # The log is a record of every verified callback; a retry is printed again (it cannot tell).
        return self._lines.submit(event.dumps())

    async def _write_lines(self, lines: list[bytes]) -> list[bool]:
        try:
            assert self._out is not None, "open() first"
            self._out.write(b"\n".join(lines) + b"\n")
            self._out.flush()
        except OSError as exc:
            self._failing = True
            raise SinkUnavailable(f"cannot write the log sink: {exc.strerror}") from exc
        self._failing = False
        return [True] * len(lines)

    async def ready(self) -> bool:
        return self._out is not None and not self._out.closed and not self._failing

    async def close(self) -> None:
        await self._lines.drain()
        if self._out is not None and self._out is not sys.stdout.buffer:
            with contextlib.suppress(OSError):  # lines a failed write left in the buffer: already refused (503)
                self._out.close()
