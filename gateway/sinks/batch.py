"""Batcher: events gather while a batch is being written; each event's future resolves with its batch.

Every sink writes this way (one write(2), one pipe write or one statement per batch), so the
machinery lives here once: a sink supplies only `commit`, which writes one batch and says, per item,
new (True), duplicate (False) or not stored (an exception).

Whatever happens to a batch, every one of its futures is resolved: a commit that raises anything,
or outlives its deadline, resolves them all with SinkUnavailable (the caller answers 503 and the
provider retries), so no request can wait for ever on a connection that an outage killed.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from gateway.errors import SinkUnavailable

T = TypeVar("T")
Outcome = bool | BaseException
Commit = Callable[[list[T]], Awaitable[Sequence[Outcome]]]
Observe = Callable[[float], None]  # seconds from submit until the item was taken (a histogram's observe)

log = logging.getLogger("gateway.sinks")


def settle(future: asyncio.Future[bool], outcome: Outcome) -> None:
    """Resolve a write's future, unless the request went away (its future was cancelled): an event
    taken is stored all the same."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class Batcher(Generic[T]):
    """Up to `concurrency` batches in flight, each of at most `max_batch` items, each bounded by `deadline`."""

    def __init__(self, commit: Commit[T], *, what: str, max_batch: int, concurrency: int = 1,
                 deadline: float | None = None, observe: Observe | None = None) -> None:
        self._commit = commit
        self._what = what  # "the PostgreSQL store", for the refusal's detail
        self._max_batch = max_batch
        self._concurrency = concurrency
        self._deadline = deadline
        self._observe = observe
        self._pending: collections.deque[tuple[T, asyncio.Future[bool], float]] = collections.deque()
        self._flushers: set[asyncio.Task[None]] = set()
        # Flushers that will still look at _pending: counted by the flusher itself, in the same step
        # that finds _pending empty (a task's done-callback runs a loop turn later, too late to ask).
        self._running = 0

    def submit(self, item: T) -> asyncio.Future[bool]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        self._pending.append((item, future, time.perf_counter()))
        # A new batch starts: another flusher, if there is room (a running flusher takes whatever
        # joined after it; a task per item would mostly find nothing to do).
        if (len(self._pending) == 1 or not self._running) and self._running < self._concurrency:
            self._running += 1
            flusher = loop.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return future

    async def _flush(self) -> None:
        """Commits batches of what is waiting until nothing is."""
        try:
            await self._flush_pending()
        finally:
            self._running -= 1

    async def _flush_pending(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            outcomes: Sequence[Outcome]
            try:
                async with asyncio.timeout(self._deadline):
                    outcomes = await self._commit([item for item, _, _ in batch])
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
            except SinkUnavailable as exc:
                outcomes = [exc] * len(batch)
            except TimeoutError:
                outcomes = [SinkUnavailable(f"{self._what} did not answer within {self._deadline:g} s")] * len(batch)
            except asyncio.CancelledError:
                stopped = SinkUnavailable(f"{self._what} is shutting down")
                for _, future, _ in batch:
                    settle(future, stopped)
                raise
            except Exception as exc:  # a client library's own error in an outage: never leave a request waiting
                log.warning("%s failed a batch with %s", self._what, type(exc).__name__)
                outcomes = [SinkUnavailable(f"{self._what} cannot take events: {reason(exc)}")] * len(batch)
            now = time.perf_counter()
            for (_, future, submitted), outcome in zip(batch, outcomes, strict=True):
                settle(future, outcome)
                if self._observe is not None and not isinstance(outcome, BaseException):
                    self._observe(now - submitted)

    async def drain(self) -> None:
        """Wait until everything submitted so far has been committed (or refused)."""
        while self._flushers:
            await asyncio.gather(*self._flushers, return_exceptions=True)


def reason(exc: BaseException) -> str:
    """One line that says what failed, never a DSN (it may carry a password): type and message only."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:200] if str(exc) else type(exc).__name__
