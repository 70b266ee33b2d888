"""The outbox: one delivery row per (subscription, event), written by the store in the event's own
transaction, so an acknowledged callback always has its deliveries and a retry of it adds none.

A Part (gateway/sinks/base.py). The row keeps the body and, filled by the store in the same
transaction, the message's current status; the dispatcher sends payload.with_current(body, current).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from gateway.forward.payload import body, wants
from gateway.forward.settings import Subscription
from gateway.model import StatusEvent
from gateway.sinks.base import Rows

COLUMNS = ("id", "subscription", "event_id", "provider", "message_id", "body", "current", "state", "attempts",
           "next_at", "lease_until", "created_at")


def delivery_id(subscription: str, event_id: str) -> str:
    """Stable: the same event for the same subscription is one delivery, on every replica."""
    return hashlib.sha256(f"{subscription}\x1f{event_id}".encode()).hexdigest()[:32]


class Outbox:
    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        self.subscriptions = tuple(subscriptions)

    def rows(self, event: StatusEvent) -> list[Rows]:
        values = tuple(
            (delivery_id(s.name, event.id), s.name, event.id, event.provider, event.message_id,
             body(event, include_raw=s.include_raw).decode(), "", "pending", 0, event.received_at, None,
             event.received_at)
            for s in self.subscriptions if wants(s, event))
        return [Rows("deliveries", COLUMNS, values, current="current")] if values else []
