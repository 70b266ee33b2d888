"""The sink interface every destination implements, and the Store a readable sink adds."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Protocol

from gateway.model import Status, StatusEvent


class Sink(Protocol):
    async def open(self) -> None:
        """Connect and create what is missing; raises SinkUnavailable if it cannot."""
        ...

    def write(self, event: StatusEvent) -> asyncio.Future[bool]:
        """Take the event; the future resolves once it is durable: True if new, False if its id
        was already stored, or raises SinkUnavailable (the caller answers 503, the provider retries).

        A future rather than a coroutine, so one callback is handed to every sink at once and the
        sinks' waits overlap; none may resolve it before the event is written.
        """
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None:
        """Flush what was taken, then release resources."""
        ...


class Store(Sink, Protocol):
    """A sink that can be read back: serves /v1 and the `status` and `tail` commands."""

    async def current(self, provider: str, message_id: str) -> StatusEvent | None:
        """The event that holds the message's current status (docs/events.md: model.current_of)."""
        ...

    async def timeline(self, provider: str, message_id: str) -> list[StatusEvent]:
        """Every stored event of the message, in the order the gateway stored them."""
        ...

    async def recent(
        self, *, provider: str | None = None, status: Status | None = None,
        since: datetime | None = None, limit: int = 100, after_seq: int | None = None,
    ) -> list[tuple[int, StatusEvent]]:
        """Newest first, with each event's store sequence number (for `tail --follow`)."""
        ...
