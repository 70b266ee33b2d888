"""The sink interface every destination implements, the Store a readable sink adds, and the Part
that adds rows to a store's own write."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from gateway.model import Fragment, Refused, Status, StatusEvent, Unread
from gateway.stats import Window

IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
DELIVERY_STATES = ("pending", "delivered", "failed", "disabled")


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows for one table, written with an event: in the event's own transaction, and only if the
    event is new (a provider's retry adds none). Names come from code, never from a request."""

    table: str
    columns: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]
    # A column the store fills, in the same transaction, with the message's current status after
    # this write, as JSON {"status", "final", "updated_at"} (its value in `values` is ignored).
    current: str | None = None

    def __post_init__(self) -> None:
        _check_names(self.table, self.columns, self.current)
        if any(len(row) != len(self.columns) for row in self.values):
            raise ValueError(f"a row of {self.table} does not have {len(self.columns)} values")

    def to_json(self) -> list[Any]:
        return [self.table, list(self.columns), [list(row) for row in self.values], self.current]

    @classmethod
    def from_json(cls, data: list[Any]) -> Rows:
        table, columns, values, current = data
        return cls(table, tuple(columns), tuple(tuple(row) for row in values), current)

    def with_current(self, *current: Any) -> list[tuple[Any, ...]]:
        """The rows to insert, with the current-status column replaced by `current`: its JSON, or
        the parameters of the store's SQL that makes it."""
        if self.current is None:
            return list(self.values)
        at = self.columns.index(self.current)
        return [(*row[:at], *current, *row[at + 1:]) for row in self.values]


@functools.lru_cache(maxsize=64)
def _check_names(table: str, columns: tuple[str, ...], current: str | None) -> None:
    """Once per shape, not per event: the writer rebuilds every event's Rows from its line."""
    if current is not None and current not in columns:
        raise ValueError(f"{current} is not a column of {table}")
    if not all(IDENTIFIER.fullmatch(name) for name in (table, *columns)):
        raise ValueError(f"not a plain SQL name among {table}{columns}")


Key = tuple[str, str]  # (provider, message_id)


def rows_by_table(added: Iterable[tuple[Key, Sequence[Rows]]], current: Callable[[Key], tuple[Any, ...]],
                  ) -> dict[tuple[str, tuple[str, ...], str | None], list[tuple[Any, ...]]]:
    """The rows of a batch's new events (each with its message's key), table by table, with
    current(key) in place of a current column: one INSERT per table and batch, not per event."""
    tables: dict[tuple[str, tuple[str, ...], str | None], list[tuple[Any, ...]]] = {}
    for key, extras in added:
        for rows in extras:
            tables.setdefault((rows.table, rows.columns, rows.current), []).extend(rows.with_current(*current(key)))
    return tables


def current_json(status: str, received_at: str) -> str:
    """The {"status", "final", "updated_at"} of a message whose current event has this status."""
    return orjson.dumps({"status": status, "final": Status(status).final, "updated_at": received_at}).decode()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery the dispatcher leased: what it needs to send one attempt."""

    id: str
    subscription: str
    event_id: str  # the webhook-id
    body: bytes  # the stored body, without data.current
    current: bytes  # data.current as the event's write left it
    attempts: int  # made before this one
    created_at: str  # when the event was received (ISO 8601 UTC)
    schedule_from: int = 0  # the attempt count when the retry schedule (re)started: a redelivery restarts it


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt's record, and what it leaves the delivery as."""

    delivery_id: str
    number: int  # 1 for the first attempt
    at: str  # when it started, ISO 8601 UTC
    http_status: int | None
    error: str | None  # a timeout, a refused connection: no HTTP answer
    duration_ms: float
    state: str  # afterwards: delivered, pending (retried at next_at), failed, disabled
    next_at: str


class Outbox(Protocol):
    """What the dispatcher asks of the store that keeps the deliveries."""

    async def claim(self, *, now: str, lease_until: str, limit: int, by: str) -> list[Claimed]:
        """Lease up to `limit` due deliveries (pending, next_at <= now, no live lease), oldest first,
        for `by` (host and process); the lease is committed before any is sent, so another replica
        skips them until it ends."""
        ...

    async def finish(self, attempt: Attempt, *, disable: str | None = None) -> None:
        """Record the attempt and the delivery's new state, lease released; `disable`: that
        subscription answered 410, so none of its pending deliveries is sent any more."""
        ...

    async def release(self, delivery_ids: Sequence[str]) -> None:
        """Give up leases without an attempt (shutdown): another process sends them at once."""
        ...

    async def backlog(self) -> tuple[int, str | None]:
        """(pending deliveries, created_at of the oldest), for the metrics."""
        ...

    async def deliveries(self, *, subscription: str | None = None, state: str | None = None,
                         message_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The newest deliveries first, as /v1/deliveries and `status-gateway deliveries` show them."""
        ...

    async def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        """One delivery with its `history`: every attempt, oldest first."""
        ...

    async def redeliver(self, *, ids: Sequence[str] = (), subscription: str | None = None,
                        since: str | None = None, now: str) -> list[str]:
        """Send these again from now, with the same webhook-id and a fresh retry schedule; by
        subscription, also re-enables it after a 410. Returns the ids queued."""
        ...


class Part(Protocol):
    """Another part of the gateway (the forwarding outbox) whose rows commit with the events.

    Its tables come with the store's schema migrations; the store calls `rows` once per event it
    is given, in the gateway process, before the write.
    """

    def rows(self, event: StatusEvent) -> Sequence[Rows]: ...


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
        direction: str | None = None, reason: str | None = None,
    ) -> list[tuple[int, StatusEvent]]:
        """Newest first, with each event's store sequence number (for `tail --follow`);
        `direction`: inbound (incoming messages) or outbound (statuses); `reason`: a category."""
        ...

    async def export(self, *, after_seq: int = 0, since: str | None = None, until: str | None = None,
                     limit: int = 1000) -> list[tuple[int, StatusEvent]]:
        """A page of events oldest first, with their seq: `export` walks the store with it."""
        ...

    async def stats(self, *, window: Window, by: str = "provider", provider: str | None = None,
                    endpoint: str | None = None) -> list[dict[str, Any]]:
        """/v1/stats' groups over the messages first seen in the window (gateway/stats.py)."""
        ...

    async def keep_unread(self, endpoint: str, provider: str, unread: Unread, received_at: str) -> bool:
        """Keep a genuine callback no parser reads yet, durably, before it is acknowledged; False if
        this endpoint already kept the same one (a retry)."""
        ...

    async def keep_part(self, endpoint: str, provider: str, part: Fragment) -> list[Fragment] | None:
        """Keep one part durably (once: a retry adds nothing); every part of its group, in order,
        once all are kept, else None; [] if its message was stored and forgotten already.

        Parts of one group kept at once (replicas, workers) are taken one after the other, so
        exactly the last of them sees the group complete. A part whose place in its group holds
        another part (a new message reusing the group before the old one completed) moves the
        old parts to the unread callbacks, whole, and starts the group afresh.
        """
        ...

    async def forget_parts(self, endpoint: str, parts: Sequence[Fragment]) -> None:
        """The message of these parts is stored: drop them, and remember their ids, so that a
        late retry of one is known (keep_part answers []) and the group can be reused."""
        ...

    async def unread(self, *, endpoint: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The unread callbacks kept, newest first, as /v1/unread shows them."""
        ...

    async def quarantine(self, refused: Sequence[Refused], *, max_count: int, max_bytes: int) -> None:
        """Keep refused callbacks (SPEC §11), each once; then each of their endpoints keeps only
        its newest, at most `max_count` of them and `max_bytes` in all."""
        ...

    async def refused(self, *, endpoint: str | None = None, ids: Sequence[str] = (), since: str | None = None,
                      until: str | None = None, limit: int = 100) -> list[Refused]:
        """The refused callbacks kept, newest first."""
        ...

    async def refused_counts(self) -> list[dict[str, Any]]:
        """How many each endpoint keeps, by refusal code, and the newest one's time."""
        ...

    async def forget_refused(self, ids: Sequence[str]) -> None:
        """These were replayed (stored now, or found stored): out of the quarantine."""
        ...
