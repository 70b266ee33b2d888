"""Which subscriptions an event goes to, and the body it goes with (SPEC §7).

The body is made once, when the event is stored, and every attempt sends those same bytes:
`{"type": "message.status.<status>", "timestamp", "data": <the event, raw only with include_raw,
plus "current": the message's status after precedence>}`, so a receiver can ignore a late `sent`.
"""

from __future__ import annotations

import fnmatch
from datetime import datetime

import orjson

from gateway.forward.settings import Subscription
from gateway.model import StatusEvent, utc_iso


def event_type(event: StatusEvent) -> str:
    return f"message.status.{event.status.value}"


def wants(subscription: Subscription, event: StatusEvent) -> bool:
    """The subscription's filters, all of them: type globs, providers, endpoints, final_only."""
    kind = event_type(event)
    return (any(fnmatch.fnmatchcase(kind, glob) for glob in subscription.events)
            and (subscription.providers is None or event.provider in subscription.providers)
            and (subscription.endpoints is None or event.endpoint in subscription.endpoints)
            and (not subscription.final_only or event.final))


def body(event: StatusEvent, current: StatusEvent, *, include_raw: bool, at: datetime) -> bytes:
    """The request body; `current` is the message's event that holds its status after this one was stored."""
    data = event.to_json()
    if not include_raw:
        del data["raw"]
    data["current"] = {"status": current.status.value, "final": current.final, "updated_at": current.received_at}
    return orjson.dumps({"type": event_type(event), "timestamp": utc_iso(at), "data": data})
