"""The status table against docs/events.md, event ids, and the JSON shape."""

from __future__ import annotations

import pytest

from gateway.model import STATUS_TABLE, Status, StatusEvent

# docs/events.md "Statuses", copied by hand: (rank, final).
SPEC = {
    "accepted": (1, False), "scheduled": (1, False), "queued": (1, False), "sending": (2, False),
    "sent": (3, False), "delivered": (4, True), "partially_delivered": (4, True), "undelivered": (4, True),
    "failed": (4, True), "rejected": (4, True), "expired": (4, True), "canceled": (4, True),
    "read": (5, True), "unknown": (0, False),
    "received": (1, True),  # SPEC §8: an incoming message
}


def test_status_table_matches_the_spec() -> None:
    assert {status.value: (status.rank, status.final) for status in Status} == SPEC
    assert set(STATUS_TABLE) == set(Status)


def event(**overrides: object) -> StatusEvent:
    fields: dict[str, object] = {
        "provider": "twilio", "endpoint": "main", "message_id": "SM1", "status": Status.SENT,
        "provider_status": "sent", "account": "AC1", "received_at": "2026-01-01T00:00:00.000000Z",
    }
    fields.update(overrides)
    return StatusEvent(**fields)  # type: ignore[arg-type]


def test_id_is_stable_across_retries_and_receipt_times() -> None:
    assert event().id == event(received_at="2026-01-02T00:00:00.000000Z", endpoint="other").id


@pytest.mark.parametrize("change", [
    {"provider_status": "delivered", "status": Status.DELIVERED}, {"message_id": "SM2"}, {"account": "AC2"},
    {"error_code": "30003"}, {"occurred_at": "2026-01-01T00:00:00.000000Z"}, {"provider": "vonage"},
], ids=["status", "message", "account", "error", "time", "provider"])
def test_id_changes_with_every_identifying_field(change: dict[str, object]) -> None:
    assert event(**change).id != event().id


def test_json_round_trip_uses_spec_names() -> None:
    original = event(sender="+1500", to="+1501", raw={"MessageSid": "SM1"})
    data = original.to_json()
    assert data["from"] == "+1500" and "sender" not in data and data["final"] is False
    assert StatusEvent.loads(original.dumps()) == original


def test_precedence_orders_rank_then_time() -> None:
    delivered = event(status=Status.DELIVERED, provider_status="delivered")
    late_sent = event(received_at="2026-01-09T00:00:00.000000Z")
    unknown = event(status=Status.UNKNOWN, provider_status="new", received_at="2026-01-09T00:00:00.000000Z")
    assert max([late_sent, delivered, unknown], key=lambda e: e.precedence) is delivered
    assert max([late_sent, unknown], key=lambda e: e.precedence) is late_sent


def test_an_event_stored_before_inbound_messages_reads_back_as_an_outbound_status_with_its_id() -> None:
    stored = event().to_json()
    for key in ("direction", "text", "media"):
        del stored[key]
    again = StatusEvent.from_json(stored)
    assert (again.direction, again.text, again.media, again.id) == ("outbound", None, (), event().id)
