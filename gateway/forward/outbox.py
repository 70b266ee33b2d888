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
from gateway.model import StatusEvent, parse_utc_iso
from gateway.sinks.base import Rows

COLUMNS = ("id", "subscription", "event_id", "provider", "message_id", "body", "current", "state", "attempts",
           "next_at", "lease_until", "created_at")


def delivery_id(subscription: str, event_id: str, received_at: str) -> str:
    """Stable (the same event for the same subscription is one delivery, on every replica) and in
    arrival order: 12 hex digits of the event's received_at in milliseconds, then 20 of a hash.

    In arrival order, a new row goes at the end of the id index; a random id made every delivery
    rewrite a page somewhere inside it, which doubled the SQLite writer's work (docs/benchmarks.md).
    """
    millis = int(parse_utc_iso(received_at).timestamp() * 1000)
    return f"{millis:012x}" + hashlib.sha256(f"{subscription}\x1f{event_id}".encode()).hexdigest()[:20]


class Outbox:
    def __init__(self, subscriptions: Sequence[Subscription]) -> None:
        self.subscriptions = tuple(subscriptions)

    def rows(self, event: StatusEvent) -> list[Rows]:
        wanted = [s for s in self.subscriptions if wants(s, event)]
        if not wanted:
            return []
        bodies = {raw: body(event, include_raw=raw).decode() for raw in {s.include_raw for s in wanted}}
        values = tuple(
            (delivery_id(s.name, event.id, event.received_at), s.name, event.id, event.provider, event.message_id,
             bodies[s.include_raw], "", "pending", 0, event.received_at, None, event.received_at)
            for s in wanted)
        return [Rows("deliveries", COLUMNS, values, current="current")]
