"""The sink interface every destination implements, and the Store a readable sink adds."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from gateway.model import Status, StatusEvent


class Sink(Protocol):
    async def open(self) -> None:
        """Connect and create what is missing; raises SinkUnavailable if it cannot."""
        ...

    async def write(self, event: StatusEvent) -> bool:
        """Durably take the event: True if new, False if its id was already stored.

        Raises SinkUnavailable; the caller then answers 503 and the provider retries.
        """
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None:
        """Flush what was taken, then release resources."""
        ...


class Store(Sink, Protocol):
    """A sink that can be read back: serves /v1 and the `status` and `tail` commands."""

    async def current(self, provider: str, message_id: str) -> StatusEvent | None:
        """The event that holds the message's current status by SPEC §4 precedence."""
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
