"""The normalized event and the one status table (rank, final): docs/events.md."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

import orjson


class Status(StrEnum):
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    PARTIALLY_DELIVERED = "partially_delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    CANCELED = "canceled"
    READ = "read"
    RECEIVED = "received"  # an incoming message (SPEC §8): direction inbound
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        return STATUS_TABLE[self][0]

    @property
    def final(self) -> bool:
        return STATUS_TABLE[self][1]

    @property
    def failure(self) -> bool:
        """The statuses that carry a `reason` (SPEC §9)."""
        return self in FAILURES


# (rank, final), as in docs/events.md#statuses. A higher rank wins; `read` may follow a final status.
STATUS_TABLE: dict[Status, tuple[int, bool]] = {
    Status.ACCEPTED: (1, False),
    Status.SCHEDULED: (1, False),
    Status.QUEUED: (1, False),
    Status.SENDING: (2, False),
    Status.SENT: (3, False),
    Status.DELIVERED: (4, True),
    Status.PARTIALLY_DELIVERED: (4, True),
    Status.UNDELIVERED: (4, True),
    Status.FAILED: (4, True),
    Status.REJECTED: (4, True),
    Status.EXPIRED: (4, True),
    Status.CANCELED: (4, True),
    Status.READ: (5, True),
    Status.RECEIVED: (1, True),
    Status.UNKNOWN: (0, False),
}


FAILURES = frozenset({Status.UNDELIVERED, Status.FAILED, Status.REJECTED, Status.EXPIRED})

# Why a message failed, in one vocabulary for every provider (README, Why it failed).
CATEGORIES = ("invalid_number", "unreachable", "unroutable", "opted_out", "blocked", "spam_filtered",
              "content_rejected", "sender_rejected", "account_problem", "rate_limited", "expired",
              "provider_error", "unknown")


@dataclass(frozen=True, slots=True)
class Reason:
    """A failure's category, whether resending it unchanged to the same number fails the same way
    (`permanent`), and the provider's description of its code."""

    category: str
    permanent: bool
    description: str | None = None
    # False: the provider's code is in no table (counted, so a new code shows): not serialized.
    mapped: bool = field(default=True, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"category": self.category, "permanent": self.permanent, "description": self.description}


def utc_iso(moment: datetime) -> str:
    """Fixed-width ISO 8601 UTC, so that stored timestamps also compare correctly as text."""
    # isoformat pads the year to four digits (strftime's %Y does not) and is twice as fast.
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"  # drops the "+00:00"


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time a user typed ("2026-01-01T00:00:00Z"); one with no zone is UTC. ValueError if not."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def parse_utc_iso(text: str) -> datetime:
    """The moment utc_iso() wrote ("…Z")."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def event_id(
    provider: str,
    account: str | None,
    message_id: str,
    provider_status: str,
    error_code: str | None,
    occurred_at: str | None,
) -> str:
    """Same provider callback → same id (a retry is stored once); a new status never collides."""
    parts = (provider, account or "", message_id, provider_status, error_code or "", occurred_at or "")
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Media:
    """One attachment of an incoming message: where the provider keeps it, and its type if said."""

    url: str
    content_type: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusEvent:
    provider: str
    endpoint: str
    message_id: str
    status: Status
    provider_status: str
    error_code: str | None = None
    error_message: str | None = None
    to: str | None = None
    sender: str | None = None
    channel: str | None = None
    account: str | None = None
    occurred_at: str | None = None
    received_at: str
    raw: dict[str, Any] = field(default_factory=dict)
    # An incoming message (status received) is inbound, with its text and media; a status, outbound.
    direction: str = "outbound"
    text: str | None = None
    media: tuple[Media, ...] = ()
    reason: Reason | None = None  # on a failure status only (SPEC §9)
    id: str = ""
    _json: bytes = field(default=b"", init=False, compare=False, repr=False)  # dumps(), made once: every sink asks

    def __post_init__(self) -> None:
        if not self.id:
            computed = event_id(
                self.provider, self.account, self.message_id,
                self.provider_status, self.error_code, self.occurred_at,
            )
            object.__setattr__(self, "id", computed)

    @property
    def final(self) -> bool:
        return self.status.final

    @property
    def precedence(self) -> tuple[int, str, str]:
        """docs/events.md: highest rank, then later `occurred_at`, then later `received_at` is current."""
        return (self.status.rank, self.occurred_at or "", self.received_at)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "provider": self.provider,
            "endpoint": self.endpoint,
            "message_id": self.message_id,
            "status": self.status.value,
            "provider_status": self.provider_status,
            "final": self.final,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "to": self.to,
            "from": self.sender,
            "channel": self.channel,
            "account": self.account,
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "direction": self.direction,
            "text": self.text,
            "media": [{"url": m.url, "content_type": m.content_type} for m in self.media],
            "reason": self.reason.to_json() if self.reason else None,
            "raw": self.raw,
        }

    def dumps(self) -> bytes:
        if not self._json:
            object.__setattr__(self, "_json", orjson.dumps(self.to_json()))
        return self._json

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusEvent:
        return cls(
            id=data["id"],
            provider=data["provider"],
            endpoint=data["endpoint"],
            message_id=data["message_id"],
            status=Status(data["status"]),
            provider_status=data["provider_status"],
            error_code=data.get("error_code"),
            error_message=data.get("error_message"),
            to=data.get("to"),
            sender=data.get("from"),
            channel=data.get("channel"),
            account=data.get("account"),
            occurred_at=data.get("occurred_at"),
            received_at=data["received_at"],
            raw=data.get("raw") or {},
            # Events stored before SPEC §8 have none of these: they were all statuses.
            direction=data.get("direction") or "outbound",
            text=data.get("text"),
            media=tuple(Media(m["url"], m.get("content_type")) for m in data.get("media") or ()),
            # Events stored before SPEC §9 have none: the stores fill it in on read (providers.reason_of).
            reason=Reason(reason["category"], reason["permanent"], reason.get("description"))
            if (reason := data.get("reason")) else None,
        )

    @classmethod
    def loads(cls, text: bytes | str) -> StatusEvent:
        return cls.from_json(orjson.loads(text))


@dataclass(frozen=True, slots=True)
class Unread:
    """A verified callback of a kind no parser reads yet (a new inbound message type, a new kind of
    webhook): kept whole by the store and answered as accepted, because the providers never retry
    a 4xx and the callback is genuine. `kind` says what it is, as far as the adapter can tell."""

    kind: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Refused:
    """A callback refused for its signature or token, kept so it can be explained and replayed
    (SPEC §11): the providers never retry a 4xx, and a wrong secret or public_url would otherwise
    lose every status silently. It holds the request as the check saw it (the signatures too, which
    re-verifying needs), never a configured secret."""

    id: str
    endpoint: str
    provider: str  # the adapter's key ("vonage-sms")
    code: str  # the refusal: invalid_signature, invalid_token, unsigned_callback
    detail: str
    method: str
    url: str  # the URL that was checked
    query: str
    headers: dict[str, str]  # only those the checks read, lower-cased
    body: bytes
    received_at: str

    @property
    def size(self) -> int:
        return len(self.body) + len(self.url) + sum(len(k) + len(v) for k, v in self.headers.items())

    @staticmethod
    def key(endpoint: str, method: str, url: str, headers: dict[str, str], body: bytes) -> str:
        """The same request refused twice (a provider's retry, a forger's loop) is kept once."""
        digest = hashlib.sha256(f"{endpoint}\x1f{method}\x1f{url}\x1f".encode())
        digest.update(orjson.dumps(headers, option=orjson.OPT_SORT_KEYS))
        digest.update(body)
        return digest.hexdigest()[:32]

    def to_json(self, *, with_body: bool = False) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id, "endpoint": self.endpoint, "provider": self.provider, "code": self.code,
            "detail": self.detail, "method": self.method, "url": self.url, "received_at": self.received_at,
            "bytes": len(self.body)}
        if with_body:
            data["headers"] = self.headers
            data["body"] = self.body.decode("utf-8", "replace")
        return data


@dataclass(frozen=True, slots=True)
class Fragment:
    """One part of a message the provider sends in parts (the SMS API's concatenated inbound SMS).

    The store keeps each part as it comes (the part is acknowledged once it is durable); when it
    holds all `total` of a group, the adapter's join() makes the one event, and once that is
    stored the store forgets the group but remembers its parts' ids, so that a late retry of a
    part is known, and a later message that reuses the group (an SMS's concat-ref is one byte)
    starts afresh.
    """

    group: str  # the same for every part of one message, on this endpoint
    id: str  # the part's own id (the SMS API's messageId): a retry of the part has the same
    number: int  # 1 for the first part
    total: int
    fields: dict[str, Any]
    received_at: str  # ISO 8601 UTC, when this part came


def current_of(timeline: Iterable[StatusEvent]) -> StatusEvent | None:
    """docs/events.md's rule over a message's stored events, in the order they were stored: the greatest
    precedence; of equals, the first stored (a store moves the current row only to a greater one).

    The SQLite trigger and the PostgreSQL statement decide the same in SQL, inside the write;
    tests/sinks/test_precedence.py holds both to this function with random arrival orders.
    """
    best: StatusEvent | None = None
    for event in timeline:
        if best is None or event.precedence > best.precedence:
            best = event
    return best
