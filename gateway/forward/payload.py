"""Which subscriptions an event goes to, and the body it goes with (SPEC §7).

The body is made when the event is stored, and every attempt sends those same bytes:
`{"type": "message.status.<status>", "timestamp", "data": <the event, raw only with include_raw,
plus "current": the message's status after precedence>}`, so a receiver can ignore a late `sent`.
"""

from __future__ import annotations

import fnmatch

import orjson

from gateway.forward.settings import RECEIVED_TYPE, Subscription
from gateway.model import StatusEvent


def event_type(event: StatusEvent) -> str:
    """message.status.<status>; an incoming message is message.received (SPEC §7, §8)."""
    if event.direction == "inbound":
        return RECEIVED_TYPE
    return f"message.status.{event.status.value}"


def wants(subscription: Subscription, event: StatusEvent) -> bool:
    """The subscription's filters, all of them: type globs, providers, endpoints, final_only."""
    kind = event_type(event)
    return (any(fnmatch.fnmatchcase(kind, glob) for glob in subscription.events)
            and (subscription.providers is None or event.provider in subscription.providers)
            and (subscription.endpoints is None or event.endpoint in subscription.endpoints)
            and (not subscription.final_only or event.final))


def body(event: StatusEvent, *, include_raw: bool) -> bytes:
    """The request body without data.current, which the store adds when it writes the delivery row.

    `timestamp` is when the gateway received the event; data is its last key, so with_current()
    can close it with the current status.
    """
    data = event.to_json()
    if not include_raw:
        del data["raw"]
    return orjson.dumps({"type": event_type(event), "timestamp": event.received_at, "data": data})


def with_current(body: bytes, current: bytes) -> bytes:
    """The bytes sent: body with data.current, the message's {"status", "final", "updated_at"} as it
    stood when this event was stored (both parts are stored, so every attempt sends the same bytes)."""
    if not body.endswith(b"}}"):
        raise ValueError("not a body made by payload.body")
    return body[:-2] + b',"current":' + current + b"}}"
